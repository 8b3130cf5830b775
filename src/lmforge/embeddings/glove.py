"""GloVe (Pennington et al. 2014): word vectors fitted to the logarithm of co-occurrence counts.

1. Count (`cooccurrence`): for every pair of words at distance d <= window in one sentence,
   X[i, j] and X[j, i] grow by 1/d, so near neighbours count more.
2. Fit, over the non-zero entries, the weighted least squares

       J = sum f(X_ij) (w_i . c_j + b_i + b'_j - log X_ij)^2,
       f(x) = min(1, (x / x_max)^alpha)

   f keeps rare, noisy pairs from counting much and caps frequent pairs at 1 (x_max = 100,
   alpha = 0.75 in the paper). The optimiser is AdaGrad: each parameter steps by
   lr * g / sqrt(G), with G the sum of its past squared gradients (started at 1), so often
   updated rows take smaller steps. The entries are shuffled each epoch and taken in batches
   (one vectorised step each, run on Hogwild threads).
3. The word vectors are w + c: the two sets differ only by their random start, and the sum
   is slightly better than either (the paper's choice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmforge.embeddings.hogwild import run_hogwild
from lmforge.embeddings.vectors import KeyedVectors
from lmforge.embeddings.vocab import Corpus
from lmforge.embeddings.word2vec import Trained, TrainStats, Word2VecSettings, prepare
from lmforge.errors import LmforgeError

_CHUNK = 1 << 22  # positions counted at a time, to bound memory


@dataclass
class GloveSettings(Word2VecSettings):
    """Word2Vec's fields where they mean the same (dim, window, epochs, min_count, alpha as the
    learning rate, workers, seed); negative, sg, sample and min_alpha are not used."""

    window: int = 10
    epochs: int = 25
    alpha: float = 0.05  # AdaGrad's learning rate
    x_max: float = 100.0
    weight_power: float = 0.75  # the paper's alpha in f(x)
    batch_words: int = 4096  # co-occurrence entries per vectorised step

    def check(self) -> None:
        super().check()
        if self.x_max <= 0 or self.weight_power <= 0:
            raise LmforgeError(
                f"x_max and weight_power must be positive, got {self.x_max}, {self.weight_power}"
            )


@dataclass
class Cooccurrence:
    """The non-zero entries of the symmetric co-occurrence matrix, as coordinates."""

    rows: np.ndarray  # int64
    cols: np.ndarray  # int64
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.values)


def _merge(keys: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return unique, np.bincount(inverse, np.concatenate(values), minlength=len(unique))


def cooccurrence(corpus: Corpus, vocab_size: int, window: int) -> Cooccurrence:
    """Distance-weighted counts: each pair at distance d (same sentence) adds 1/d both ways."""
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    ids = corpus.ids.astype(np.int64)
    for start in range(0, len(ids), _CHUNK):
        stop = min(start + _CHUNK + window, len(ids))  # pairs that start in this chunk
        chunk, sentence = ids[start:stop], corpus.sentence[start:stop]
        for d in range(1, window + 1):
            first = min(_CHUNK, len(chunk) - d)
            if first <= 0:
                break
            same = sentence[:first] == sentence[d : d + first]
            a, b = chunk[:first][same], chunk[d : d + first][same]
            key, count = np.unique(
                np.concatenate([a * vocab_size + b, b * vocab_size + a]), return_counts=True
            )
            keys.append(key)
            values.append(count / d)
        if sum(len(k) for k in keys) > 4 * _CHUNK:  # fold the partial sums to bound memory
            key, value = _merge(keys, values)
            keys, values = [key], [value]
    key, value = _merge(keys, values) if keys else (np.zeros(0, dtype=np.int64), np.zeros(0))
    if not len(key):
        raise LmforgeError(
            "no two words share a sentence, so there is nothing to count; give longer text"
        )
    return Cooccurrence(key // vocab_size, key % vocab_size, value)


class _Glove:
    """w_i . c_j + b_i + b'_j is one dot product of extended rows [w_i, b_i, 1] and
    [c_j, 1, b'_j], so a step is two gathers and two updates; the constant 1s never move."""

    def __init__(self, vocab_size: int, s: GloveSettings):
        gen = torch.Generator().manual_seed(s.seed)
        d = s.dim
        self.s = s
        self.w = (torch.rand(vocab_size, d + 2, generator=gen) - 0.5) / d
        self.c = (torch.rand(vocab_size, d + 2, generator=gen) - 0.5) / d
        self.w[:, d + 1] = 1
        self.c[:, d] = 1
        # AdaGrad's sums of squared gradients, started at 1 as GloVe's reference code does
        self.gw, self.gc = torch.ones(vocab_size, d + 2), torch.ones(vocab_size, d + 2)
        self.loss = 0.0  # J summed over every step taken (threads may lose an addition)

    def step(self, batch: tuple[torch.Tensor, ...]) -> None:
        i, j, log_x, weight = batch
        d = self.s.dim
        wi, cj = self.w.index_select(0, i), self.c.index_select(0, j)
        diff = torch.linalg.vecdot(wi, cj).sub_(log_x)
        g = weight.mul_(diff)  # dJ/d(w_i . c_j), halved
        self.loss += float(g.dot(diff)) / 2
        grad_w, grad_c = cj.mul_(g.unsqueeze(1)), wi.mul_(g.unsqueeze(1))
        grad_w[:, d + 1] = 0  # the constant columns stay 1
        grad_c[:, d] = 0
        for table, sums, rows, grad in ((self.w, self.gw, i, grad_w), (self.c, self.gc, j, grad_c)):
            step = sums.index_select(0, rows).rsqrt_().mul_(grad)
            sums.index_add_(0, rows, grad.mul_(grad))
            table.index_add_(0, rows, step, alpha=-self.s.alpha)

    def vectors(self) -> torch.Tensor:
        d = self.s.dim
        return self.w[:, :d] + self.c[:, :d]


def _batches(counts: Cooccurrence, s: GloveSettings) -> Iterator[tuple]:
    rows, cols = torch.from_numpy(counts.rows), torch.from_numpy(counts.cols)
    log_x = torch.from_numpy(np.log(counts.values).astype(np.float32))
    weight = torch.from_numpy(
        np.minimum(1.0, (counts.values / s.x_max) ** s.weight_power).astype(np.float32)
    )
    gen = torch.Generator().manual_seed(s.seed)
    for epoch in range(s.epochs):
        order = torch.randperm(len(counts), generator=gen)
        for start in range(0, len(order), s.batch_words):
            take = order[start : start + s.batch_words]
            progress = (epoch + start / len(order)) / s.epochs
            yield rows[take], cols[take], log_x[take], weight[take], progress


def train_glove(
    sentences: Sequence[Sequence[str]],
    settings: GloveSettings | None = None,
    progress: Callable[[float], None] | None = None,
    **changes,
) -> Trained:
    """Count co-occurrences, then fit GloVe; keyword arguments change single settings."""
    s = (settings or GloveSettings()).updated(**changes)
    vocab, corpus = prepare(sentences, s)
    counts = cooccurrence(corpus, len(vocab), s.window)
    model = _Glove(len(vocab), s)
    seconds = run_hogwild(
        _batches(counts, s), lambda b: model.step(b[:4]), s.workers, progress, lambda b: b[4]
    )
    vectors = KeyedVectors(vocab.words, model.vectors().numpy(), counts=vocab.counts)
    return Trained(vectors, TrainStats(corpus.raw_words, s.epochs, seconds), s)
