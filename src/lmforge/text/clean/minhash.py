"""Near-duplicate detection: MinHash signatures, LSH banding and union-find clustering.

MinHash (Broder 1997): for a random hash function h, P[min h(A) = min h(B)] = J(A, B), the
Jaccard similarity of the shingle sets A and B. With `num_perm` independent functions the
fraction of equal signature entries estimates J with standard error sqrt(J(1-J)/num_perm).

Our functions are multiply-add-shift hashes of a 64-bit shingle hash x (Dietzfelbinger):
h_k(x) = (a_k x + b_k mod 2^64) >> 32, a_k odd. Unlike datasketch's (a x + b) mod (2^61-1),
this needs no modulo, so numpy computes it with one multiply and one add per entry.

LSH banding (Indyk-Motwani; Leskovec et al., Mining of Massive Datasets, ch. 3): the signature
is cut into `bands` bands of `rows` entries; two documents are candidates when any band is
equal, which happens with probability 1 - (1 - J^rows)^bands, the S-curve. Candidates whose
estimated Jaccard reaches the threshold are joined in a union-find; one document is kept per
cluster (the first seen).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Iterator

import numpy as np

from lmforge.errors import LmforgeError

MASK32 = np.uint64(0xFFFFFFFF)
EMPTY = np.uint32(0xFFFFFFFF)  # the signature entry of a document with no shingles
_WORD = re.compile(r"\w+")
_ROWS_PER_BLOCK = 512  # shingles hashed at once: 512 KiB of uint64, kept in cache


def words(text: str) -> list[str]:
    """The tokens shingles are made of: runs of word characters, lower-cased."""
    return _WORD.findall(text.lower())


def word_shingles(text: str, n: int) -> list[str]:
    """The word n-grams of `text` as strings ("the quick brown"), the set MinHash estimates
    the Jaccard similarity of. A text shorter than n words is one shingle."""
    tokens = words(text)
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def char_shingles(text: str, n: int) -> list[str]:
    """Character n-grams of the text with its whitespace collapsed."""
    flat = " ".join(text.lower().split())
    if len(flat) < n:
        return [flat] if flat else []
    return [flat[i : i + n] for i in range(len(flat) - n + 1)]


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads the bits of a combined n-gram hash (wrapping uint64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Shingler:
    """Text -> 64-bit hashes of its shingles. Word n-grams hash each word once (cached) and
    combine n word hashes with numpy, so no n-gram string is ever built; character n-grams
    hash each n-gram string."""

    def __init__(self, ngram: int = 5, unit: str = "word", cache_size: int = 1 << 20):
        if unit not in ("word", "char"):
            raise LmforgeError(f"shingle unit '{unit}' is not one of: word, char")
        if ngram < 1:
            raise LmforgeError(f"shingle size {ngram} must be at least 1")
        self.ngram, self.unit, self.cache_size = ngram, unit, cache_size
        self._cache: dict[str, int] = {}

    def _word_hash(self, token: str) -> int:
        h = self._cache.get(token)
        if h is None:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            h = self._cache[token] = hash64(token.encode("utf-8"))
        return h

    def hashes(self, text: str) -> np.ndarray:
        if self.unit == "char":
            return np.fromiter(
                (hash64(s.encode("utf-8")) for s in char_shingles(text, self.ngram)),
                dtype=np.uint64,
            )
        tokens = words(text)
        hs = list(map(self._cache.get, tokens))
        if None in hs:
            get = self._word_hash
            hs = [get(t) for t in tokens]
        wh = np.array(hs, dtype=np.uint64)
        n = min(self.ngram, len(wh))
        if n == 0:
            return wh
        count = len(wh) - n + 1
        h = wh[:count].copy()
        with np.errstate(over="ignore"):
            for j in range(1, n):
                h = h * np.uint64(0x100000001B3) + wh[j : j + count]
            return _mix(h)


class MinHasher:
    """num_perm hash functions drawn from `seed`; signatures of many documents at once."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 2:
            raise LmforgeError(f"num_perm {num_perm} is too small; use at least 2 (128 is usual)")
        self.num_perm = num_perm
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        return self.signatures([hashes])[0]

    def signatures(self, hash_lists: list[np.ndarray]) -> np.ndarray:
        """(documents, num_perm) uint32: each row the minimum of every function over that
        document's shingle hashes; a document without shingles is all EMPTY."""
        n = len(hash_lists)
        sig = np.full((n, self.num_perm), EMPTY, dtype=np.uint32)
        lengths = np.fromiter((len(h) for h in hash_lists), dtype=np.int64, count=n)
        if lengths.sum() == 0:
            return sig
        flat = np.concatenate([np.asarray(h, dtype=np.uint64) for h in hash_lists])
        owner = np.repeat(np.arange(n), lengths)
        buf = np.empty((_ROWS_PER_BLOCK, self.num_perm), dtype=np.uint64)
        shift = np.uint64(32)
        for s in range(0, len(flat), _ROWS_PER_BLOCK):
            x = flat[s : s + _ROWS_PER_BLOCK, None]
            vals = buf[: len(x)]  # in place, in a block that stays in cache
            np.multiply(x, self.a, out=vals)
            np.add(vals, self.b, out=vals)
            np.right_shift(vals, shift, out=vals)
            d = owner[s : s + _ROWS_PER_BLOCK]
            starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
            mins = np.minimum.reduceat(vals, starts, axis=0).astype(np.uint32)
            ids = d[starts]
            sig[ids] = np.minimum(sig[ids], mins)
        return sig


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def jaccard(a: Iterable, b: Iterable) -> float:
    """The exact Jaccard similarity of two sets."""
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def candidate_probability(j: float | np.ndarray, bands: int, rows: int):
    """The S-curve: the probability that two documents of Jaccard j share at least one band."""
    return 1.0 - (1.0 - np.asarray(j, dtype=float) ** rows) ** bands


def _integral(f, lo: float, hi: float, steps: int = 200) -> float:
    """Simpson's rule, plenty for the smooth S-curve (error ~ steps^-4)."""
    if hi <= lo:
        return 0.0
    x = np.linspace(lo, hi, 2 * steps + 1)
    y = f(x)
    h = (hi - lo) / (2 * steps)
    return float(h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted area of false
    positives (S-curve below the threshold) and false negatives (1 - S-curve above it)."""
    if not 0.0 < threshold < 1.0:
        raise LmforgeError(f"Jaccard threshold {threshold} must lie strictly between 0 and 1")
    best, best_err = (1, num_perm), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integral(lambda j, b=b, r=r: candidate_probability(j, b, r), 0.0, threshold)
            fn = _integral(lambda j, b=b, r=r: 1 - candidate_probability(j, b, r), threshold, 1)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def default_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands that weigh a missed duplicate (0.8) above a spurious candidate (0.2): every
    candidate's full signature is compared before it is joined, so a spurious candidate
    costs one comparison while a missed one stays in the corpus."""
    return optimal_bands(threshold, num_perm, FP_WEIGHT, FN_WEIGHT)


FP_WEIGHT, FN_WEIGHT = 0.2, 0.8


class UnionFind:
    """Disjoint sets over integer ids with path halving and union by size; the root of a set
    is reported as its smallest id, so 'keep the first document' is `find(i) == i`."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.low: list[int] = []

    def add(self) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.size.append(1)
        self.low.append(i)
        return i

    def _root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def find(self, i: int) -> int:
        """The smallest id in i's set."""
        return self.low[self._root(i)]

    def union(self, i: int, j: int) -> bool:
        ri, rj = self._root(i), self._root(j)
        if ri == rj:
            return False
        if self.size[ri] < self.size[rj]:
            ri, rj = rj, ri
        self.parent[rj] = ri
        self.size[ri] += self.size[rj]
        self.low[ri] = min(self.low[ri], self.low[rj])
        return True

    def same(self, i: int, j: int) -> bool:
        return self._root(i) == self._root(j)

    def clusters(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return out


class LSHIndex:
    """Band tables over signatures, with union-find clusters of the verified candidates.

    Each band's `rows` entries are folded into one 64-bit key. A bucket keeps one document per
    cluster it has seen, so a thousand copies of one page cost one comparison each, not a
    thousand. `verify` compares the full signatures of a candidate pair (estimated Jaccard >=
    threshold) before joining; without it every candidate is joined, as datatrove does.
    """

    def __init__(self, num_perm: int, bands: int, rows: int, threshold: float, verify=True):
        if bands * rows > num_perm:
            raise LmforgeError(
                f"bands*rows = {bands}*{rows} exceeds num_perm {num_perm}; lower one of them"
            )
        if bands < 1 or rows < 1:
            raise LmforgeError(f"bands ({bands}) and rows ({rows}) must be at least 1")
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self.threshold, self.verify = threshold, verify
        self.tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        rng = np.random.Generator(np.random.PCG64(12345))
        self._fold = rng.integers(0, 2**64, size=rows, dtype=np.uint64) | np.uint64(1)
        self.uf = UnionFind()
        self._sigs: list[np.ndarray] = []  # blocks of signatures, for verification
        self._block_starts: list[int] = []
        self.candidates_checked = 0

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(documents, bands) uint64 keys; equal rows give equal keys."""
        n = sig.shape[0]
        cut = sig[:, : self.bands * self.rows].reshape(n, self.bands, self.rows)
        with np.errstate(over="ignore"):
            folded = (cut.astype(np.uint64) * self._fold).sum(axis=2, dtype=np.uint64)
            return _mix(folded + np.arange(self.bands, dtype=np.uint64))

    def _signature(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self._block_starts, i, side="right")) - 1
        return self._sigs[k][i - self._block_starts[k]]

    def add(self, sig: np.ndarray) -> list[int]:
        """Index a batch of signatures; returns their ids (0, 1, ... in order of addition).
        Documents without shingles (all EMPTY) are indexed but never joined."""
        sig = np.ascontiguousarray(sig, dtype=np.uint32)
        self._block_starts.append(len(self.uf.parent))
        self._sigs.append(sig)
        keys = self.band_keys(sig).tolist()
        empty = (sig == EMPTY).all(axis=1).tolist()
        ids = []
        for row, (doc_keys, is_empty) in enumerate(zip(keys, empty)):
            g = self.uf.add()
            ids.append(g)
            if is_empty:
                continue
            for table, key in zip(self.tables, doc_keys):
                bucket = table.get(key)
                if bucket is None:
                    table[key] = [g]
                    continue
                joined = False
                for other in bucket:
                    if self.uf.same(other, g):
                        joined = True
                        break
                    self.candidates_checked += 1
                    if self.verify and (
                        estimate_jaccard(sig[row], self._signature(other)) < self.threshold
                    ):
                        continue
                    self.uf.union(other, g)
                    joined = True
                    break
                if not joined:
                    bucket.append(g)
        return ids

    def is_duplicate(self, i: int) -> bool:
        """True for every document of a cluster but its first."""
        return self.uf.find(i) != i

    def duplicate_of(self, i: int) -> int:
        return self.uf.find(i)


def candidate_pairs(sig: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Every pair (i < j) that shares at least one band: the set an LSH query would return.
    Bands are compared as bytes, exactly."""
    pairs: set[tuple[int, int]] = set()
    for k in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, row in enumerate(sig[:, k * rows : (k + 1) * rows]):
            buckets.setdefault(row.tobytes(), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def near_duplicate_clusters(
    texts: Iterable[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    unit: str = "word",
    bands: int | None = None,
    rows: int | None = None,
    seed: int = 1,
    batch: int = 256,
) -> LSHIndex:
    """Cluster texts in one pass; `index.is_duplicate(i)` names the documents to drop."""
    if bands is None or rows is None:
        bands, rows = default_bands(threshold, num_perm)
    shingler, hasher = Shingler(ngram, unit), MinHasher(num_perm, seed)
    index = LSHIndex(num_perm, bands, rows, threshold)
    for chunk in _chunks(texts, batch):
        index.add(hasher.signatures([shingler.hashes(t) for t in chunk]))
    return index


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
