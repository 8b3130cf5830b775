"""Word2Vec (Mikolov et al. 2013): skip-gram and CBOW with negative sampling, frequent-word
subsampling and a linearly decaying learning rate.

Skip-gram maximises, for each centre word c and each context word o within its window,

    log s(u_c . v_o) + sum over k noise words n of log s(-u_c . v_n)

(s the logistic sigmoid; u rows of the input matrix, v rows of the output matrix; noise words
drawn from unigram^0.75, `vocab.py`). CBOW does the same with u_c replaced by h, the mean of
the context words' input vectors, predicting the centre word. The window of each centre is
"reduced": its size is drawn from 1..w, so near words count more, and it stops at the
sentence's ends. The input vectors are the word vectors.

How it runs fast without a compiled inner loop. word2vec.c and gensim update one (centre,
context) pair at a time. Here one step is vectorised tensor code over a batch of several
hundred centres:

- The stream is cut into blocks of consecutive centres. A block gathers the rows of its
  centres and of w words each side once; skip-gram then scores every centre against its whole
  window in one matrix product per block (`torch.bmm`) and keeps the entries on the band of
  true pairs, where word2vec.c would loop over pairs. CBOW sums each block's windows with one
  multiply-add of shifted slices per offset, and spreads the errors back the same way.
- Negatives are shared by a block (Ji et al. 2016, "Parallelizing Word2Vec in Shared and
  Distributed Memory"): the block draws K noise words and scores them against every centre in
  the same product. A centre with p pairs has p * k noise terms in skip-gram, so each shared
  score is weighted by p * k / K, and the expected update equals k noise words per pair.
- The summed updates go back with `index_add_`. Worker threads run steps at the same time on
  the shared matrices without locks (Hogwild, `hogwild.py`).

What changes against pair-at-a-time SGD is staleness: a batch reads its vectors before any of
its updates land, so a word met c times in a batch takes one step c times as long. Two rules
keep that small. Blocks go to batches in random order from all over the corpus, so a topical
word does not recur in a batch the way it recurs within a scene; and batches are cut to keep
the most frequent word (kept after subsampling, or drawn as noise) to about MAX_REPEATS
occurrences in all the workers' batches together (`batch_size`). Beyond a few dozen,
training diverges. `test_word2vec.py` checks
that one step equals the gradient step of the objective above, computed pair by pair with
autograd; `benchmarks/embeddings.py` compares the vectors with gensim's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from lmforge.embeddings.hogwild import run_hogwild
from lmforge.embeddings.vectors import KeyedVectors
from lmforge.embeddings.vocab import Corpus, Vocabulary, sample_noise, subsample
from lmforge.errors import LmforgeError

# Centres per block: skip-gram scores a block against its window in one matrix product,
# whose size grows with the block; CBOW sums its windows by shifted slices, so longer blocks
# only save the rows gathered twice at block edges. A block draws one set of noise words.
BLOCK_SG, BLOCK_CBOW = 16, 128
MAX_REPEATS = 16  # expected occurrences of the most frequent word in flight at once, at most


@dataclass
class Word2VecSettings:
    dim: int = 100
    window: int = 5  # context words on each side, at most
    negative: int = 5  # noise words per true pair
    sg: bool = True  # skip-gram; False: CBOW
    epochs: int = 5
    min_count: int = 5  # rarer words are dropped
    max_vocab: int | None = None  # keep only the most frequent words
    sample: float = 1e-3  # frequent-word subsampling threshold t; 0: off
    alpha: float = 0.025  # learning rate at the start, decayed linearly ...
    min_alpha: float = 0.0001  # ... to this at the end
    workers: int = 2  # threads
    batch_words: int = 2048  # centres per vectorised step, at most; see batch_size
    seed: int = 1

    def updated(self, **changes) -> Word2VecSettings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise LmforgeError(
                f"unknown setting(s) {', '.join(unknown)} for {type(self).__name__}; "
                f"known: {', '.join(sorted(known))}"
            )
        return replace(self, **changes)

    def check(self) -> None:
        for name in ("dim", "window", "negative", "epochs", "min_count", "workers", "batch_words"):
            if getattr(self, name) < 1:
                raise LmforgeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.min_alpha <= self.alpha:
            raise LmforgeError(
                "learning rates must satisfy 0 < min_alpha <= alpha, got "
                f"alpha={self.alpha}, min_alpha={self.min_alpha}"
            )
        if self.sample < 0:
            raise LmforgeError(f"sample must be >= 0 (0 turns subsampling off), got {self.sample}")


@dataclass
class TrainStats:
    raw_words: int  # corpus words per epoch, rare ones included
    epochs: int
    seconds: float  # training only, vocabulary building excluded

    @property
    def words_per_s(self) -> float:
        return self.raw_words * self.epochs / max(self.seconds, 1e-9)


class InputRows:
    """How a batch's input vectors are read and updated: one row per word in Word2Vec.

    FastText overrides this to compose a word's input vector from its n-gram rows."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def gather(self, ids: torch.Tensor):
        """Input vectors of `ids` (any shape), and a handle for `add`."""
        rows = self.matrix.index_select(0, ids.reshape(-1))
        return rows.view(*ids.shape, -1), ids

    def add(self, handle, grads: torch.Tensor) -> None:
        self.matrix.index_add_(0, handle.reshape(-1), grads.reshape(-1, grads.shape[-1]))


@dataclass
class _Job:
    ids: np.ndarray  # (blocks, block + 2w): each block's centres with w context words each side
    sentence: np.ndarray  # same shape: sentence numbers, -1 for padding outside the stream
    alpha: float
    progress: float  # share of the whole training done before this batch
    seed: tuple[int, ...]


class _Trainer:
    def __init__(
        self, settings: Word2VecSettings, inputs: InputRows, output: torch.Tensor, noise_cdf
    ):
        self.s = settings
        self.inputs = inputs
        self.output = output
        self.noise_cdf = noise_cdf
        w, k = settings.window, settings.negative
        self.distance = torch.arange(-w, w + 1).abs()
        # Noise words per block. Skip-gram: a centre has about w pairs, each with k noise
        # terms, so k * w shared words keep each one's weight near 1. CBOW: 2k, weight 1/2.
        self.noise_per_block = k * w if settings.sg else 2 * k
        self.block = block_length(settings)

    def _band(self, m: torch.Tensor) -> torch.Tensor:
        """View of the (centre, offset) entries of block matrices (blocks, B, >= B + 2w) whose
        column i + w is centre i: shape (blocks, B, 2w + 1)."""
        batch_stride, row_stride, _ = m.stride()
        shape = (m.shape[0], self.block, 2 * self.s.window + 1)
        return m.as_strided(shape, (batch_stride, row_stride + 1, 1), m.storage_offset())

    def _banded(self, values: torch.Tensor) -> torch.Tensor:
        """Block matrices that are zero except `values` (blocks, B, 2w + 1) on the band."""
        m = values.new_zeros(values.shape[0], self.block, self.block + 2 * self.s.window)
        self._band(m).copy_(values)
        return m

    def step(self, job: _Job) -> None:
        rng = np.random.default_rng(job.seed)
        w, B, K = self.s.window, self.block, self.noise_per_block
        ids = torch.from_numpy(job.ids)  # (blocks, B + 2w)
        blocks, width = ids.shape
        sentence = torch.from_numpy(job.sentence)
        around = sentence.as_strided((blocks, B, 2 * w + 1), (width, 1, 1))
        reach = torch.from_numpy(rng.integers(1, w + 1, size=(blocks, B, 1)))
        own = sentence[:, w : w + B, None]
        mask = (around == own) & (self.distance <= reach) & (self.distance > 0) & (own >= 0)
        mask = mask.float()  # (blocks, B, 2w + 1); padding (sentence -1) is never trained
        noise_ids = torch.from_numpy(sample_noise(self.noise_cdf, (blocks, K), rng))
        (self._skipgram if self.s.sg else self._cbow)(ids, mask, noise_ids, job.alpha)

    def _skipgram(self, ids, mask, noise_ids, alpha):
        w, B, K = self.s.window, self.block, self.noise_per_block
        centre = ids[:, w : w + B]
        pairs = mask.sum(2)  # (blocks, B)
        u, handle = self.inputs.gather(centre)  # (blocks, B, d)
        # one product per block scores each centre against its window's rows and K noise rows
        out_ids = torch.cat([ids, noise_ids], 1)
        v = self.output.index_select(0, out_ids.view(-1)).view(*out_ids.shape, -1)
        g = torch.sigmoid(torch.bmm(u, v.transpose(1, 2))).neg_()  # d log s(-x)/dx = -s(x)
        # a centre has (pairs * k) noise terms; the block's K shared words stand for them
        g[:, :, -K:].mul_((pairs * (self.s.negative / K)).unsqueeze(2))
        trained = self._banded(mask)  # 1 where a window column is one of the centre's pairs
        g[:, :, :-K].mul_(trained).add_(trained)  # d log s(x)/dx = 1 - s(x) there, 0 elsewhere
        g.mul_(alpha)
        self.output.index_add_(0, out_ids.view(-1), torch.bmm(g.transpose(1, 2), u).flatten(0, 1))
        self.inputs.add(handle, torch.bmm(g, v))

    def _cbow(self, ids, mask, noise_ids, alpha):
        w, B, K = self.s.window, self.block, self.noise_per_block
        centre = ids[:, w : w + B]
        pairs = mask.sum(2, keepdim=True)
        live = (pairs > 0).float()  # a centre alone in its sentence has no context
        u, handle = self.inputs.gather(ids)  # (blocks, B + 2w, d)
        offsets = [j for j in range(2 * w + 1) if j != w]  # offset j - w: rows u[:, j : j + B]
        h = u[:, :B] * mask[:, :, :1]
        for j in offsets[1:]:
            h.addcmul_(mask[:, :, j : j + 1], u[:, j : j + B])
        h.div_(pairs.clamp(min=1))  # each centre's mean context vector
        v = self.output.index_select(0, centre.reshape(-1)).view_as(h)
        noise = self.output.index_select(0, noise_ids.view(-1)).view(*noise_ids.shape, -1)
        g = torch.sigmoid(torch.linalg.vecdot(h, v).unsqueeze(2)).neg_().add_(1)
        g.mul_(live * alpha)
        # K shared noise words stand for each centre's k
        gn = torch.sigmoid(torch.bmm(h, noise.transpose(1, 2)))
        gn.mul_(live * (-alpha * self.s.negative / K))
        grad_h = torch.baddbmm(v * g, gn, noise)
        grad_noise = torch.bmm(gn.transpose(1, 2), h)
        grads = torch.cat([h.mul_(g), grad_noise], 1)
        self.output.index_add_(0, torch.cat([centre, noise_ids], 1).view(-1), grads.flatten(0, 1))
        # word2vec.c gives every context word the whole error of the mean, undivided
        grad_u = torch.zeros_like(u)
        for j in offsets:
            grad_u[:, j : j + B].addcmul_(mask[:, :, j : j + 1], grad_h)
        self.inputs.add(handle, grad_u)


def block_length(s: Word2VecSettings) -> int:
    return BLOCK_SG if s.sg else BLOCK_CBOW


def batch_size(vocab: Vocabulary, s: Word2VecSettings) -> int:
    """Centres per step: `s.batch_words`, but no more than keeps the most frequent word,
    after subsampling or as a noise word, to about MAX_REPEATS occurrences in the batches
    that all workers have in flight at once.

    A word met c times in those batches gets the sum of c updates computed from the same
    stale vectors, one step c times as long as sequential SGD's, which takes c small steps
    that each see the last. Past a few dozen the sum overshoots and training diverges."""
    kept = vocab.keep_probabilities(s.sample) * vocab.counts
    top_share = max(kept.max() / kept.sum(), float(np.diff(vocab.noise_cdf(), prepend=0).max()))
    block = block_length(s)
    most = int(MAX_REPEATS / top_share / s.workers)
    return max(block, min(s.batch_words, most) // block * block)


def _jobs(corpus: Corpus, keep: np.ndarray, s: Word2VecSettings, batch: int) -> Iterator[_Job]:
    """Each epoch: subsample, cut the stream into blocks of consecutive centres, and
    hand out batches of blocks drawn from all over the corpus in random order. Spreading a
    batch keeps a topical word from recurring in it, so its summed update stays small."""
    w, block = s.window, block_length(s)
    offsets = np.arange(block + 2 * w)
    per_batch = batch // block
    for epoch in range(s.epochs):
        rng = np.random.default_rng((s.seed, epoch))
        stream = subsample(corpus, keep, rng)
        n_blocks = -(-len(stream.ids) // block)
        tail = n_blocks * block - len(stream.ids) + w
        ids = np.pad(stream.ids.astype(np.int64), (w, tail))
        sentence = np.pad(stream.sentence, (w, tail), constant_values=-1)
        order = rng.permutation(n_blocks)
        n_batches = -(-n_blocks // per_batch)
        for b in range(n_batches):
            rows = order[b * per_batch : (b + 1) * per_batch, None] * block + offsets
            progress = (epoch + b / n_batches) / s.epochs
            alpha = s.alpha - (s.alpha - s.min_alpha) * progress
            yield _Job(ids[rows], sentence[rows], alpha, progress, (s.seed, epoch, b))


def run_training(
    corpus: Corpus,
    vocab: Vocabulary,
    s: Word2VecSettings,
    inputs: InputRows,
    output: torch.Tensor,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Train in place with `s.workers` threads; return the seconds spent."""
    trainer = _Trainer(s, inputs, output, vocab.noise_cdf())
    jobs = _jobs(corpus, vocab.keep_probabilities(s.sample), s, batch_size(vocab, s))
    return run_hogwild(jobs, trainer.step, s.workers, progress, lambda job: job.progress)


@dataclass
class Trained:
    """What training returns: the word vectors, the run's timing and its settings."""

    vectors: KeyedVectors
    stats: TrainStats
    settings: object


def prepare(sentences: Sequence[Sequence[str]], s: Word2VecSettings):
    s.check()
    vocab = Vocabulary.build(sentences, s.min_count, s.max_vocab)
    return vocab, vocab.encode(sentences)


def train_word2vec(
    sentences: Sequence[Sequence[str]],
    settings: Word2VecSettings | None = None,
    progress: Callable[[float], None] | None = None,
    **changes,
) -> Trained:
    """Train Word2Vec on tokenised sentences (see vocab.tokenize); keyword arguments change
    single settings: `train_word2vec(sentences, sg=False, epochs=10)`."""
    s = (settings or Word2VecSettings()).updated(**changes)
    vocab, corpus = prepare(sentences, s)
    gen = torch.Generator().manual_seed(s.seed)
    inputs = (torch.rand(len(vocab), s.dim, generator=gen) - 0.5) / s.dim  # word2vec.c's init
    output = torch.zeros(len(vocab), s.dim)
    seconds = run_training(corpus, vocab, s, InputRows(inputs), output, progress)
    vectors = KeyedVectors(vocab.words, inputs.numpy(), counts=vocab.counts)
    return Trained(vectors, TrainStats(corpus.raw_words, s.epochs, seconds), s)
