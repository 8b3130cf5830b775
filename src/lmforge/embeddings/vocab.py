"""Words in: tokenising, the counted vocabulary, the corpus as word ids, frequent-word
subsampling and the negative-sampling distribution, shared by Word2Vec, GloVe and FastText.

A sentence is a block of text between blank lines (a speech, a paragraph); windows never
cross a sentence boundary. Words are lowercased runs of letters, with inner apostrophes kept
("king's", "o'er"); digits and punctuation are dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge.errors import LmforgeError

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_BLOCK = re.compile(r"\n\s*\n")


def tokenize(text: str) -> list[list[str]]:
    """Sentences (blank-line-separated blocks) of lowercased words."""
    sentences = (WORD.findall(block) for block in _BLOCK.split(text.lower()))
    return [s for s in sentences if s]


def tokenize_texts(texts: Iterable[str]) -> list[list[str]]:
    return [s for text in texts for s in tokenize(text)]


@dataclass
class Corpus:
    """Every in-vocabulary word of the corpus as one id stream.

    `sentence[i]` numbers the sentence that `ids[i]` belongs to; `raw_words` also counts the
    words dropped for being rare, so words/s figures compare with other tools' "raw words".
    """

    ids: np.ndarray  # int32
    sentence: np.ndarray  # int32, non-decreasing
    raw_words: int


class Vocabulary:
    """Words seen at least `min_count` times, most frequent first (ties: first seen first)."""

    def __init__(self, words: Sequence[str], counts: Sequence[int]):
        self.words = list(words)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], min_count: int = 5, max_size: int | None = None
    ) -> Vocabulary:
        counter: Counter[str] = Counter()
        for sentence in sentences:
            counter.update(sentence)
        if not counter:
            raise LmforgeError(
                "the corpus holds no words (letters) to learn vectors for; give text with words"
            )
        # Counter keeps first-seen order, and sorted() is stable: ties stay in that order.
        kept = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: -wc[1])
        if max_size is not None:
            kept = kept[:max_size]
        if not kept:
            top = counter.most_common(1)[0][1]
            raise LmforgeError(
                f"min_count={min_count} leaves no vocabulary (the most frequent word occurs "
                f"{top} times); lower min_count (--min-count) or give more text"
            )
        return cls([w for w, _ in kept], [c for _, c in kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, sentences: Iterable[Sequence[str]]) -> Corpus:
        """Ids of the in-vocabulary words; out-of-vocabulary words are dropped, so their
        neighbours become adjacent (as in word2vec)."""
        index = self.index
        ids: list[int] = []
        lengths: list[int] = []
        raw = 0
        for sentence in sentences:
            raw += len(sentence)
            before = len(ids)
            ids.extend(i for i in map(index.get, sentence) if i is not None)
            lengths.append(len(ids) - before)
        sentence_of = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        return Corpus(np.asarray(ids, dtype=np.int32), sentence_of, raw)

    def keep_probabilities(self, sample: float) -> np.ndarray:
        """Chance of keeping each occurrence of a word under frequent-word subsampling.

        Mikolov et al.'s rule as word2vec.c applies it: with f the word's share of the corpus
        and t = `sample`, keep with probability (sqrt(f / t) + 1) * t / f, capped at 1. Words
        rarer than about t are always kept; "the" is mostly dropped, which both speeds
        training and makes the remaining windows more informative.
        """
        if sample <= 0:
            return np.ones(len(self), dtype=np.float32)
        share = self.counts / self.counts.sum()
        keep = (np.sqrt(share / sample) + 1) * sample / share
        return np.minimum(keep, 1.0).astype(np.float32)

    def noise_cdf(self, power: float = 0.75) -> np.ndarray:
        """Cumulative unigram^power distribution that negative samples are drawn from."""
        weights = self.counts.astype(np.float64) ** power
        cdf = np.cumsum(weights)
        return cdf / cdf[-1]


def sample_noise(cdf: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """Word ids drawn from the noise distribution (inverse-CDF sampling)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def subsample(corpus: Corpus, keep: np.ndarray, rng: np.random.Generator) -> Corpus:
    """One epoch's stream: each occurrence kept with its word's probability."""
    mask = rng.random(len(corpus.ids), dtype=np.float32) < keep[corpus.ids]
    return Corpus(corpus.ids[mask], corpus.sentence[mask], corpus.raw_words)
