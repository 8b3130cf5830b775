"""Word vectors out: nearest neighbours, similarity, analogies, and the three file formats that
other tools read (gensim's `KeyedVectors.load_word2vec_format`, GloVe's own scripts).

Formats:

- word2vec text: a header line `<words> <dim>`, then one line per word: the word and its
  `dim` numbers, separated by single spaces;
- word2vec binary: the same header, then per word: the word, a space, `dim` little-endian
  float32 values, and a newline (word2vec.c's layout; the newline is optional when reading);
- GloVe text: word2vec text without the header line.

Words are written as UTF-8 and may not contain whitespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path

FORMATS = ("word2vec-binary", "word2vec-text", "glove")


class KeyedVectors:
    """A vocabulary of words, each with a vector; rows in `vectors` follow `words`."""

    def __init__(
        self, words: Sequence[str], vectors: np.ndarray, counts: Sequence[int] | None = None
    ):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but vectors of shape {vectors.shape}")
        self.words = list(words)
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise LmforgeError("the vectors list a word twice; each word must appear once")
        self._unit: np.ndarray | None = None

    # -- lookup

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._row(word)]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def _row(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"'{word}' is not in the vocabulary of {len(self)} words") from None

    @property
    def unit(self) -> np.ndarray:
        """Rows scaled to length 1 (zero rows stay zero), so dot products are cosines."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norms, 1e-12)
        return self._unit

    def vector(self, word: str, unit: bool = False) -> np.ndarray:
        """A word's vector; subclasses (FastText) also build vectors for unseen words."""
        return (self.unit if unit else self.vectors)[self._row(word)]

    # -- similarity

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the angle between two words' vectors."""
        return float(self.vector(a, unit=True) @ self.vector(b, unit=True))

    def most_similar(
        self,
        positive: str | Iterable[str] = (),
        negative: Iterable[str] = (),
        topn: int = 10,
        restrict: int | None = None,
    ) -> list[tuple[str, float]]:
        """Words nearest (by cosine) to the mean of the positive words' unit vectors minus the
        negative ones'; the query words themselves are left out. `restrict` searches only the
        most frequent rows. `king - man + woman` is `positive=[king, woman], negative=[man]`
        (3CosAdd)."""
        positive = [positive] if isinstance(positive, str) else list(positive)
        negative = list(negative)
        if not positive and not negative:
            raise LmforgeError("give at least one word to compare with")
        query = np.zeros(self.dim, dtype=np.float32)
        for word in positive:
            query += self.vector(word, unit=True)
        for word in negative:
            query -= self.vector(word, unit=True)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        scores = self.unit[:restrict] @ query
        return self._top(scores, set(positive) | set(negative), topn)

    def _top(self, scores: np.ndarray, exclude: set[str], topn: int) -> list[tuple[str, float]]:
        skip = [self.index[w] for w in exclude if w in self.index and self.index[w] < len(scores)]
        scores = scores.copy()
        scores[skip] = -np.inf
        k = min(topn, len(scores) - len(skip))
        if k <= 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.words[i], float(scores[i])) for i in best]

    def analogy(
        self, a: str, b: str, c: str, method: str = "3cosadd", topn: int = 1, restrict=None
    ) -> list[tuple[str, float]]:
        """`a` is to `b` as `c` is to ?  (man : king :: woman : queen).

        3CosAdd: argmax cos(x, b - a + c) over unit vectors. 3CosMul (Levy and Goldberg 2014):
        argmax cos'(x, b) cos'(x, c) / (cos'(x, a) + 1e-6), with cos' = (cos + 1) / 2 so every
        factor is positive; it lets no single term dominate.
        """
        if method == "3cosadd":
            return self.most_similar([b, c], [a], topn=topn, restrict=restrict)
        if method != "3cosmul":
            raise LmforgeError(f"unknown analogy method '{method}'; use 3cosadd or 3cosmul")
        unit = self.unit[:restrict]
        ua, ub, uc = (self.vector(w, unit=True) for w in (a, b, c))
        cos_a, cos_b, cos_c = ((unit @ u + 1) / 2 for u in (ua, ub, uc))
        return self._top(cos_b * cos_c / (cos_a + 1e-6), {a, b, c}, topn)

    # -- files

    def save(self, path: str | os.PathLike, fmt: str = "word2vec-binary") -> Path:
        """Write the vectors in one of FORMATS, atomically."""
        if fmt not in FORMATS:
            raise LmforgeError(f"unknown vectors format '{fmt}'; use one of {', '.join(FORMATS)}")
        bad = next((w for w in self.words if not w or any(ch.isspace() for ch in w)), None)
        if bad is not None:
            raise LmforgeError(
                f"cannot save the word {bad!r}: words in these formats are "
                "non-empty and hold no whitespace"
            )
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            if fmt != "glove":
                f.write(f"{len(self)} {self.dim}\n".encode())
            if fmt == "word2vec-binary":
                rows = self.vectors.astype("<f4")
                for word, row in zip(self.words, rows):
                    f.write(word.encode() + b" " + row.tobytes() + b"\n")
            else:
                # %.9g keeps every bit of a float32
                for word, row in zip(self.words, self.vectors):
                    f.write((word + " " + " ".join(f"{x:.9g}" for x in row) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, fmt: str | None = None) -> KeyedVectors:
        """Read vectors written by lmforge, gensim, word2vec.c or GloVe; `fmt=None` detects
        the format from the file's first lines."""
        path = Path(path)
        if not path.is_file():
            raise LmforgeError(f"vectors file not found: {path}")
        if fmt is not None and fmt not in FORMATS:
            raise LmforgeError(f"unknown vectors format '{fmt}'; use one of {', '.join(FORMATS)}")
        data = path.read_bytes()
        fmt = fmt or _detect(path, data)
        if fmt == "word2vec-binary":
            words, vectors = _read_binary(path, data)
        else:
            words, vectors = _read_text(path, data, header=fmt == "word2vec-text")
        return cls(words, vectors)


def _header(path: Path, data: bytes) -> tuple[int, int, int]:
    """(words, dim, offset after the header line) of a word2vec file."""
    end = data.find(b"\n")
    fields = data[: end if end >= 0 else len(data)].split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        raise LmforgeError(
            f"{path} is not a word2vec file: its first line should be '<words> <dim>'; "
            "for GloVe text (no header) pass the format glove"
        )
    count, dim = int(fields[0]), int(fields[1])
    if count < 1 or dim < 1:
        raise LmforgeError(f"{path}: the header announces {count} words of {dim} numbers")
    return count, dim, end + 1


def _detect(path: Path, data: bytes) -> str:
    """GloVe text has no header line; word2vec binary rows hold raw floats, which are
    (almost surely) not UTF-8 text without NUL bytes."""
    if not data.strip():
        raise LmforgeError(f"{path} is empty; give a word2vec or GloVe vectors file")
    first_end = data.find(b"\n")
    first = data[: first_end if first_end >= 0 else len(data)].split()
    if len(first) != 2 or not all(f.isdigit() for f in first):
        return "glove"
    _, _, offset = _header(path, data)
    sample = data[offset : offset + (1 << 20)]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 3:  # not just a character cut at the sample's end
            return "word2vec-binary"
    return "word2vec-binary" if b"\0" in sample else "word2vec-text"


def _read_text(path: Path, data: bytes, header: bool) -> tuple[list[str], np.ndarray]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(
            f"{path}: not UTF-8 text at byte {e.start}; if it is word2vec binary, load it "
            "with the format word2vec-binary"
        ) from None
    lines = text.splitlines()
    count = dim = None
    if header:
        count, dim, _ = _header(path, data)
        lines = lines[1:]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise LmforgeError(f"{path} holds no vectors")
    words, rows = [], []
    for lineno, line in enumerate(lines, 2 if header else 1):
        fields = line.rstrip().split(" ")
        if dim is None:
            dim = len(fields) - 1
        if len(fields) != dim + 1 or dim < 1:
            raise LmforgeError(
                f"{path}:{lineno}: {len(fields)} fields, expected a word and {dim} numbers; "
                "is it a vectors file in the format given?"
            )
        try:
            rows.append(np.array(fields[1:], dtype=np.float32))
        except ValueError:
            raise LmforgeError(
                f"{path}:{lineno}: not numbers after the word; is it a vectors file in the "
                "format given?"
            ) from None
        words.append(fields[0])
    if count is not None and count != len(words):
        raise LmforgeError(
            f"{path}: the header announces {count} words but the file holds {len(words)}; "
            "the file is cut short or not word2vec text"
        )
    return words, np.stack(rows)


def _read_binary(path: Path, data: bytes) -> tuple[list[str], np.ndarray]:
    count, dim, pos = _header(path, data)
    row_bytes = 4 * dim
    words, rows = [], np.empty((count, dim), dtype=np.float32)
    for i in range(count):
        while pos < len(data) and data[pos : pos + 1] == b"\n":  # word2vec.c's separator
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + row_bytes > len(data):
            raise LmforgeError(
                f"{path}: word {i + 1} of {count} is cut short; the file is truncated or not "
                "word2vec binary (for text files pass the format word2vec-text)"
            )
        try:
            words.append(data[pos:space].decode("utf-8"))
        except UnicodeDecodeError:
            raise LmforgeError(
                f"{path}: word {i + 1} is not UTF-8; the file is not word2vec binary"
            ) from None
        rows[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + row_bytes
    if data[pos:].strip():
        raise LmforgeError(
            f"{path}: bytes left after {count} vectors of {dim} numbers; the header does not "
            "match the file (is it word2vec text?)"
        )
    return words, rows
