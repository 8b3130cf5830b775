"""FastText (Bojanowski et al. 2017): Word2Vec whose input vector for a word is the mean of
a vector for the word itself and vectors for its character n-grams.

The n-grams of "where" with 3 <= n <= 6 are taken from "<where>": "<wh", "whe", ..., "ere>",
"<whe", ..., "<where>". Each n-gram is hashed (32-bit FNV-1a over its UTF-8 bytes, as
fastText does, bytes above 0x7f sign-extended) into one of `bucket` rows, so the table's size
does not grow with the number of distinct n-grams. Training is Word2Vec's (`word2vec.py`) with
the input side swapped: a batch composes each distinct word's input vector once
(`torch.nn.functional.embedding_bag`, mode "mean") and every row of the word receives the
word's whole gradient, undivided, as fastText does. An n-gram shared by many frequent words
would receive many words' updates in one batch; its step is capped at what MAX_REPEATS
occurrences give across the workers' batches in flight (see word2vec.py on why batches bound
repeats).

A word never seen in training still gets a vector: the mean of the vectors of its n-grams
that training met. Only the buckets that training met are kept, in a compact table, so an
n-gram whose bucket no training word used adds nothing (fastText would add its random
initial vector).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.embeddings.vectors import KeyedVectors
from lmforge.embeddings.word2vec import (
    MAX_REPEATS,
    InputRows,
    Trained,
    TrainStats,
    Word2VecSettings,
    prepare,
    run_training,
)
from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path

_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619


@dataclass
class FastTextSettings(Word2VecSettings):
    min_n: int = 3  # shortest character n-gram
    max_n: int = 6  # longest; max_n < min_n turns n-grams off (plain Word2Vec vectors)
    bucket: int = 2_000_000  # hash buckets for n-grams

    def check(self) -> None:
        super().check()
        if self.min_n < 1 or self.bucket < 1:
            raise LmforgeError(
                f"min_n and bucket must be at least 1, got min_n={self.min_n}, bucket={self.bucket}"
            )


def char_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """Character n-grams of `<word>`, shortest first, in order of position."""
    marked = f"<{word}>"
    return [marked[i : i + n] for n in range(min_n, max_n + 1) for i in range(len(marked) - n + 1)]


def fnv1a_32(ngrams: Sequence[str]) -> np.ndarray:
    """fastText's hash of each string: FNV-1a over the UTF-8 bytes, each byte taken as a
    signed char (so bytes above 0x7f are XORed in sign-extended)."""
    encoded = [s.encode("utf-8") for s in ngrams]
    longest = max((len(b) for b in encoded), default=0)
    table = np.zeros((len(encoded), longest), dtype=np.uint8)
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    for i, b in enumerate(encoded):
        table[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    h = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    signed = table.astype(np.int8).astype(np.int64).astype(np.uint64) & 0xFFFFFFFF
    for col in range(longest):
        live = col < lengths
        mixed = ((h ^ signed[:, col]) * _FNV_PRIME) & 0xFFFFFFFF
        h = np.where(live, mixed, h)
    return h.astype(np.uint32)


class _Subwords:
    """Per word, the rows of its input vector: the word's own row, then its n-gram buckets
    (renumbered to the compact table after the word rows), as flat CSR arrays."""

    def __init__(self, words: Sequence[str], s: FastTextSettings):
        grams = [char_ngrams(w, s.min_n, s.max_n) for w in words]
        lengths = np.array([len(g) for g in grams], dtype=np.int64)
        buckets = (
            fnv1a_32([g for gs in grams for g in gs]).astype(np.int64) % s.bucket
            if lengths.sum()
            else np.zeros(0, dtype=np.int64)
        )
        self.used_buckets, compact = np.unique(buckets, return_inverse=True)
        n_words = len(words)
        per_word = np.split(compact + n_words, np.cumsum(lengths)[:-1])
        rows = [np.concatenate([[i], r]) for i, r in enumerate(per_word)]
        self.rows = torch.from_numpy(np.concatenate(rows).astype(np.int64))
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths + 1)]))
        self.n_rows = n_words + len(self.used_buckets)

    def of(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat rows, bag offsets, bag lengths) for the given word ids."""
        starts, ends = self.offsets[words], self.offsets[words + 1]
        lengths = ends - starts
        bag_offsets = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(bag_offsets, lengths)
        return self.rows[torch.repeat_interleave(starts, lengths) + within], bag_offsets, lengths


class _SubwordInputs(InputRows):
    def __init__(self, matrix: torch.Tensor, subwords: _Subwords, workers: int):
        super().__init__(matrix)
        self.subwords = subwords
        self.most = MAX_REPEATS / workers  # occurrences' worth per row and batch

    def gather(self, ids: torch.Tensor):
        words, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        rows, bag_offsets, lengths = self.subwords.of(words)
        composed = torch.nn.functional.embedding_bag(rows, self.matrix, bag_offsets, mode="mean")
        return composed[inverse].view(*ids.shape, -1), (words, inverse, rows, lengths)

    def bag_sums(self, ids, bags, offsets, weights):
        composed, handle = self.gather(ids)
        sums = torch.nn.functional.embedding_bag(
            bags, composed, offsets, mode="sum", per_sample_weights=weights
        )
        return sums, handle

    def add(self, handle, grads: torch.Tensor) -> None:
        words, inverse, rows, lengths = handle
        per_word = grads.new_zeros(len(words), grads.shape[-1])
        per_word.index_add_(0, inverse, grads.reshape(-1, grads.shape[-1]))
        # each of a word's rows gets the word's whole gradient (fastText does not divide)
        row_grads = torch.repeat_interleave(per_word, lengths, dim=0)
        # An n-gram such as "<th" is shared by many frequent words, so a batch would sum far
        # more of its updates than the batch size allows for any one word (see
        # word2vec.batch_size): scale a row down to that many occurrences' worth.
        met = torch.bincount(inverse, minlength=len(words)).float()
        distinct, row_of = torch.unique(rows, return_inverse=True)
        times = torch.zeros(len(distinct)).index_add_(0, row_of, met.repeat_interleave(lengths))
        row_grads.mul_((self.most / times).clamp_(max=1.0)[row_of].unsqueeze(1))
        self.matrix.index_add_(0, rows, row_grads)


class FastTextVectors(KeyedVectors):
    """Word vectors plus the n-gram table, so words outside the vocabulary get vectors."""

    def __init__(
        self,
        words: Sequence[str],
        vectors: np.ndarray,
        ngram_vectors: np.ndarray,
        used_buckets: np.ndarray,
        min_n: int,
        max_n: int,
        bucket: int,
        counts=None,
    ):
        super().__init__(words, vectors, counts)
        self.ngram_vectors = np.asarray(ngram_vectors, dtype=np.float32)
        self.used_buckets = np.asarray(used_buckets, dtype=np.int64)
        self.min_n, self.max_n, self.bucket = min_n, max_n, bucket

    def __contains__(self, word: str) -> bool:
        """Every word has a vector unless none of its n-grams was seen in training."""
        return word in self.index or self._ngram_rows(word).size > 0

    def _rows(self, grams: list[str]) -> np.ndarray:
        """Rows of the n-gram table for the n-grams whose buckets training met."""
        if not grams or not len(self.used_buckets):
            return np.zeros(0, dtype=np.int64)
        buckets = fnv1a_32(grams).astype(np.int64) % self.bucket
        at = np.minimum(np.searchsorted(self.used_buckets, buckets), len(self.used_buckets) - 1)
        return at[self.used_buckets[at] == buckets]

    def _ngram_rows(self, word: str) -> np.ndarray:
        return self._rows(char_ngrams(word, self.min_n, self.max_n))

    def piece_vector(self, piece: str, initial: bool) -> np.ndarray | None:
        """A subword's vector: the mean of the n-grams of `<piece` if it starts a word, of
        `piece` if it continues one; no `>`, since where the word ends is unknown. None if
        training met none of them."""
        text = "<" + piece if initial else piece
        grams = [
            text[i : i + n]
            for n in range(self.min_n, self.max_n + 1)
            for i in range(len(text) - n + 1)
        ]
        rows = self._rows(grams)
        return self.ngram_vectors[rows].mean(0) if rows.size else None

    def vector(self, word: str, unit: bool = False) -> np.ndarray:
        if word in self.index:
            return super().vector(word, unit)
        rows = self._ngram_rows(word)
        if not rows.size:
            raise KeyError(f"'{word}' is not in the vocabulary and none of its n-grams was seen")
        v = self.ngram_vectors[rows].mean(0)
        return v / max(float(np.linalg.norm(v)), 1e-12) if unit else v

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vector(word)

    NGRAMS_FILE = "ngrams.safetensors"

    def save_ngrams(self, directory: str | os.PathLike) -> Path:
        """The n-gram table, for `load_ngrams`; the word vectors go in a vectors file."""
        from safetensors.numpy import save_file

        path = Path(directory) / self.NGRAMS_FILE
        meta = {"min_n": str(self.min_n), "max_n": str(self.max_n), "bucket": str(self.bucket)}
        with atomic_path(path) as tmp:
            save_file({"vectors": self.ngram_vectors, "buckets": self.used_buckets}, str(tmp), meta)
        return path

    @classmethod
    def load_ngrams(cls, words: KeyedVectors, directory: str | os.PathLike) -> FastTextVectors:
        from safetensors import SafetensorError, safe_open

        path = Path(directory) / cls.NGRAMS_FILE
        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
                table, buckets = f.get_tensor("vectors"), f.get_tensor("buckets")
            min_n, max_n, bucket = (int(meta[k]) for k in ("min_n", "max_n", "bucket"))
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            raise LmforgeError(
                f"{path} is not an lmforge n-gram table ({e.__class__.__name__}); retrain"
            ) from None
        if table.ndim != 2 or table.shape[1] != words.dim or len(table) != len(buckets):
            raise LmforgeError(
                f"{path} holds {table.shape} n-gram vectors for {words.dim}-dimensional words"
            )
        return cls(words.words, words.vectors, table, buckets, min_n, max_n, bucket)


def train_fasttext(
    sentences: Sequence[Sequence[str]],
    settings: FastTextSettings | None = None,
    progress: Callable[[float], None] | None = None,
    **changes,
) -> Trained:
    """Train FastText on tokenised sentences; keyword arguments change single settings."""
    s = (settings or FastTextSettings()).updated(**changes)
    vocab, corpus = prepare(sentences, s)
    subwords = _Subwords(vocab.words, s)
    gen = torch.Generator().manual_seed(s.seed)
    inputs = (torch.rand(subwords.n_rows, s.dim, generator=gen) * 2 - 1) / s.dim  # fastText's
    output = torch.zeros(len(vocab), s.dim)
    seconds = run_training(
        corpus, vocab, s, _SubwordInputs(inputs, subwords, s.workers), output, progress
    )
    with torch.no_grad():
        rows, offsets, _ = subwords.of(torch.arange(len(vocab)))
        words = torch.nn.functional.embedding_bag(rows, inputs, offsets, mode="mean")
    vectors = FastTextVectors(
        vocab.words,
        words.numpy(),
        inputs[len(vocab) :].numpy(),
        subwords.used_buckets,
        s.min_n,
        s.max_n,
        s.bucket,
        counts=vocab.counts,
    )
    return Trained(vectors, TrainStats(corpus.raw_words, s.epochs, seconds), s)
