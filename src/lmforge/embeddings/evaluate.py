"""Intrinsic evaluation: word analogies (Mikolov et al.'s questions-words.txt) and word
similarity (WordSim-353, SimLex-999: human scores against cosine, by Spearman correlation).

Only questions and pairs whose words all have vectors count; the results say how many that
was, since a small corpus covers few of them. `vocabulary` restricts both the questions and
the candidate answers to a set of words (say, the words two models share), so two models
are measured on the same ground.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lmforge.embeddings.vectors import KeyedVectors
from lmforge.errors import LmforgeError


def _lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"evaluation file not found: {path}")
    return path.read_text(encoding="utf-8").splitlines()


def read_analogies(path: str | os.PathLike) -> list[tuple[str, str, str, str, str]]:
    """(section, a, b, c, d) per question: a is to b as c is to d. Lines ": name" open a
    section."""
    questions, section = [], ""
    for lineno, line in enumerate(_lines(path), 1):
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if not words:
            continue
        if len(words) != 4:
            raise LmforgeError(f"{path}:{lineno}: an analogy needs 4 words, found {len(words)}")
        questions.append((section, *words))
    return questions


def read_word_pairs(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """(word, word, human score) per line; tab- or space-separated, '#' starts a comment."""
    pairs = []
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        try:
            pairs.append((fields[0], fields[1], float(fields[2])))
        except (IndexError, ValueError):
            raise LmforgeError(f"{path}:{lineno}: expected 'word word score'") from None
    return pairs


def _candidates(kv: KeyedVectors, vocabulary: Iterable[str] | None, restrict: int | None):
    rows = np.arange(min(len(kv), restrict or len(kv)))
    if vocabulary is not None:
        allowed = set(vocabulary)
        rows = np.array([r for r in rows if kv.words[r] in allowed], dtype=np.int64)
    return rows


def evaluate_analogies(
    kv: KeyedVectors,
    path: str | os.PathLike,
    method: str = "3cosadd",
    vocabulary: Iterable[str] | None = None,
    restrict: int | None = 300_000,
    lowercase: bool = True,
) -> dict:
    """Top-1 accuracy on the questions whose four words are among the candidates: the
    `restrict` most frequent words, within `vocabulary` if given. The answer is searched
    among the candidates, the three question words excluded."""
    if method not in ("3cosadd", "3cosmul"):
        raise LmforgeError(f"unknown analogy method '{method}'; use 3cosadd or 3cosmul")
    rows = _candidates(kv, vocabulary, restrict)
    position = {kv.words[r]: i for i, r in enumerate(rows)}
    unit = kv.unit[rows]
    questions = read_analogies(path)
    covered, sections = [], {}
    for section, *words in questions:
        words = [w.lower() for w in words] if lowercase else words
        if all(w in position for w in words):
            covered.append((section, [position[w] for w in words]))
    correct = 0
    for start in range(0, len(covered), 1024):  # a block of questions is one matrix product
        block = covered[start : start + 1024]
        idx = np.array([q for _, q in block])
        a, b, c = unit[idx[:, 0]], unit[idx[:, 1]], unit[idx[:, 2]]
        if method == "3cosadd":
            target = b - a + c
            target /= np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
            scores = target @ unit.T
        else:
            cos_a, cos_b, cos_c = ((x @ unit.T + 1) / 2 for x in (a, b, c))
            scores = cos_b * cos_c / (cos_a + 1e-6)
        np.put_along_axis(scores, idx[:, :3], -np.inf, axis=1)
        hits = scores.argmax(1) == idx[:, 3]
        correct += int(hits.sum())
        for (section, _), hit in zip(block, hits):
            right, total = sections.get(section, (0, 0))
            sections[section] = (right + int(hit), total + 1)
    return {
        "method": method,
        "accuracy": correct / len(covered) if covered else float("nan"),
        "correct": correct,
        "covered": len(covered),
        "questions": len(questions),
        "sections": sections,
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks, ties averaged."""
    return float(np.corrcoef(_ranks(np.asarray(x)), _ranks(np.asarray(y)))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, group, size = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(group, ranks) / size)[group]  # tied values share their mean rank


def evaluate_word_pairs(
    kv: KeyedVectors,
    path: str | os.PathLike,
    vocabulary: Iterable[str] | None = None,
    lowercase: bool = True,
) -> dict:
    """Spearman correlation between cosine similarity and the human scores, over the pairs
    whose two words have vectors (and are in `vocabulary`, if given)."""
    allowed = set(vocabulary) if vocabulary is not None else None
    pairs = read_word_pairs(path)
    model, human = [], []
    for a, b, score in pairs:
        a, b = (a.lower(), b.lower()) if lowercase else (a, b)
        if all(w in kv.index and (allowed is None or w in allowed) for w in (a, b)):
            model.append(kv.similarity(a, b))
            human.append(score)
    enough = len(model) >= 3
    return {
        "spearman": spearman(np.array(model), np.array(human)) if enough else float("nan"),
        "covered": len(model),
        "pairs": len(pairs),
    }
