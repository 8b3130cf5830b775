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

- The stream is cut into blocks of consecutive centres, each with w more positions on each
  side. Skip-gram gathers the rows of a block's positions once, scores every centre against
  its whole window in one matrix product per block (`torch.bmm`) and keeps the entries on the
  band of true pairs, where word2vec.c would loop over pairs. CBOW takes each centre's
  window as a bag of 2w + 1 positions weighted 1 / (the window's size) where the mask
  holds and 0 elsewhere, and sums all the batch's bags in one `embedding_bag`; the errors
  go back the same way, in bags per position of the centres whose windows reach it. The
  bags' layout is the same for every batch; only the weights change.
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
occurrences in all the workers' batches together (`batch_size`; twice that for CBOW).
Beyond a few dozen, training diverges. `test_word2vec.py` checks that one step equals the
gradient step of the objective above, computed pair by pair with autograd;
`benchmarks/embeddings.py` compares the vectors with gensim's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import numpy as np
import torch

from lmforge.embeddings.hogwild import run_hogwild
from lmforge.embeddings.vectors import KeyedVectors
from lmforge.embeddings.vocab import Corpus, Vocabulary, sample_noise, subsample
from lmforge.errors import LmforgeError

# Centres per block: skip-gram scores a block against its window in one matrix product,
# whose size grows with the block; CBOW's bags cost the same for any block, so longer blocks
# only save the rows gathered twice at block edges. A block draws one set of noise words.
BLOCK_SG, BLOCK_CBOW = 16, 128
MAX_REPEATS = 16  # expected occurrences of the most frequent word in flight at once, at most
# CBOW tolerates more: a centre's output row gets one update, from the mean of its window,
# where skip-gram gives it one per window word. On Shakespeare (alpha 0.025, two workers)
# skip-gram diverged at 64 and CBOW at 128, and CBOW at 64 scored as at 16; at 32, CBOW keeps
# at least skip-gram's margin.
MAX_REPEATS_CBOW = 32


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

    def bag_sums(self, ids, bags, offsets, weights):
        """Weighted sums of the input vectors of `ids[bags]`, bag i starting at `offsets[i]`
        (CBOW's windows), and a handle for `add` with one gradient per entry of `ids`."""
        return torch.nn.functional.embedding_bag(
            ids.take(bags), self.matrix, offsets, mode="sum", per_sample_weights=weights
        ), ids


@dataclass
class _Job:
    ids: np.ndarray  # (blocks, block + 2w): each block's centres with w context words each side
    sentence: np.ndarray  # same shape: sentence numbers, -1 for padding outside the stream
    reach: np.ndarray  # (blocks, block): each centre's reduced window, 1..w words each side
    noise: np.ndarray  # (blocks, noise_per_block(s)): each block's shared noise words
    alpha: float
    progress: float  # share of the whole training done before this batch


class _Trainer:
    def __init__(self, settings: Word2VecSettings, inputs: InputRows, output: torch.Tensor):
        self.s = settings
        self.inputs = inputs
        self.output = output
        w = settings.window
        self.distance = np.abs(np.arange(-w, w + 1))
        self.distance[w] = w + 1  # a centre is never in its own window
        self.noise = noise_per_block(settings)
        self.block = block_length(settings)
        self.layout = _Layout(w, self.block)
        self._bags: dict[int, _Bags] = {}

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
        w, B = self.s.window, self.block
        sentence = np.ascontiguousarray(job.sentence)  # (blocks, B + 2w)
        rows, columns = sentence.strides
        shape = (len(sentence), B, 2 * w + 1)
        around = np.lib.stride_tricks.as_strided(sentence, shape, (rows, columns, columns))
        own = sentence[:, w : w + B, None]
        mask = (around == own) & (self.distance <= job.reach[:, :, None]) & (own >= 0)
        # (blocks, B, 2w + 1): which window positions each centre learns from; padding
        # (sentence -1) is never trained
        mask = torch.from_numpy(mask.astype(np.float32))
        ids, noise = torch.from_numpy(job.ids), torch.from_numpy(job.noise)
        (self._skipgram if self.s.sg else self._cbow)(ids, mask, noise, job.alpha)

    def _skipgram(self, ids, mask, noise_ids, alpha):
        w, B, K = self.s.window, self.block, self.noise
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
        w, B, K = self.s.window, self.block, self.noise
        blocks = len(ids)
        centres = blocks * B
        bags = self.bags(blocks)
        # each centre's mean context vector: a bag of its 2w + 1 window positions, weighted
        # 1 / the window's size where the mask holds and 0 elsewhere (zero without a
        # context, and such a centre changes nothing)
        weights = mask.div_(mask.sum(2, keepdim=True).clamp_(min=1)).view(-1)
        h, handle = self.inputs.bag_sums(ids.view(-1), bags.window, bags.by_centre, weights)
        out_ids = torch.cat([ids[:, w : w + B].reshape(-1), noise_ids.view(-1)])
        out = self.output.index_select(0, out_ids)
        v, noise = out[:centres], out[centres:].view(blocks, K, -1)
        g = torch.linalg.vecdot(h, v).neg_().sigmoid_().mul_(alpha).unsqueeze(1)  # 1 - s(x)
        # K shared noise words stand for each centre's k: scores (blocks, K, B)
        hb = h.view(blocks, B, -1)
        gn = torch.bmm(noise, hb.transpose(1, 2)).sigmoid_().mul_(-alpha * self.s.negative / K)
        grad_h = torch.bmm(gn.transpose(1, 2), noise).view_as(h).addcmul_(v, g)
        grads = torch.empty_like(out)  # the output rows' gradients, in place of `out`
        torch.mul(h, g, out=grads[:centres])
        torch.bmm(gn, hb, out=grads[centres:].view(blocks, K, -1))
        self.output.index_add_(0, out_ids, grads)
        # word2vec.c gives every context word the whole error of the mean, undivided: a
        # position gets the sum of the errors of the centres whose windows hold it (weight
        # 1 where the mask holds: the weights' non-zeros)
        reached = weights.view(blocks, -1).index_select(1, self.layout.order).view(-1).ne_(0)
        grad_u = torch.nn.functional.embedding_bag(
            bags.centre, grad_h, bags.by_position, mode="sum", per_sample_weights=reached
        )
        self.inputs.add(handle, grad_u)

    def bags(self, blocks: int) -> _Bags:
        if blocks not in self._bags:
            self._bags[blocks] = self.layout.bags(blocks)
        return self._bags[blocks]


class _Bags(NamedTuple):
    window: torch.Tensor  # per centre, the positions of its window
    by_centre: torch.Tensor  # where each centre's bag starts in `window`
    centre: torch.Tensor  # per position, the centres whose windows reach it
    by_position: torch.Tensor  # where each position's bag starts in `centre`


class _Layout:
    """CBOW's windows as bags over a batch's blocks, each B centres with w more positions on
    each side (width B + 2w): centre i of a block sits at position i + w, and offset j in
    0..2w of its window at position i + j. The layout is the same for every batch of the
    same number of blocks; only the mask (which pairs count) changes."""

    def __init__(self, w: int, B: int):
        self.B, self.width, self.span = B, B + 2 * w, 2 * w + 1
        position = (np.arange(B)[:, None] + np.arange(self.span)).reshape(-1)  # i + j
        self.position = position
        self.order = torch.from_numpy(np.argsort(position, kind="stable"))  # by position
        self.reached = np.bincount(position, minlength=self.width)  # pairs per position

    def bags(self, blocks: int) -> _Bags:
        pairs = self.B * self.span
        block = np.arange(blocks)[:, None]
        window = block * self.width + self.position
        centre = block * self.B + np.repeat(np.arange(self.B), self.span)[self.order.numpy()]
        by_position = np.cumsum(np.tile(self.reached, blocks)) - np.tile(self.reached, blocks)
        return _Bags(
            torch.from_numpy(window.reshape(-1)),
            torch.arange(0, blocks * pairs, self.span),
            torch.from_numpy(centre.reshape(-1)),
            torch.from_numpy(by_position),
        )


def block_length(s: Word2VecSettings) -> int:
    return BLOCK_SG if s.sg else BLOCK_CBOW


def noise_per_block(s: Word2VecSettings) -> int:
    """Noise words a block shares. Skip-gram: a centre has about w pairs, each with k noise
    terms, so k * w shared words keep each one's weight near 1. CBOW: 2k, weight 1/2."""
    return s.negative * s.window if s.sg else 2 * s.negative


def batch_size(vocab: Vocabulary, s: Word2VecSettings) -> int:
    """Centres per step: `s.batch_words`, but no more than keeps the most frequent word,
    after subsampling or as a noise word, to about MAX_REPEATS (CBOW: MAX_REPEATS_CBOW)
    occurrences in the batches that all workers have in flight at once.

    A word met c times in those batches gets the sum of c updates computed from the same
    stale vectors, one step c times as long as sequential SGD's, which takes c small steps
    that each see the last. Past a few dozen the sum overshoots and training diverges."""
    kept = vocab.keep_probabilities(s.sample) * vocab.counts
    top_share = max(kept.max() / kept.sum(), float(np.diff(vocab.noise_cdf(), prepend=0).max()))
    block = block_length(s)
    most = int((MAX_REPEATS if s.sg else MAX_REPEATS_CBOW) / top_share / s.workers)
    return max(block, min(s.batch_words, most) // block * block)


def _jobs(
    corpus: Corpus, keep: np.ndarray, noise_cdf: np.ndarray, s: Word2VecSettings, batch: int
) -> Iterator[_Job]:
    """Each epoch: subsample, cut the stream into blocks of consecutive centres, draw every
    centre's reduced window and every block's noise words, and hand out batches of blocks
    drawn from all over the corpus in random order. Spreading a batch keeps a topical word
    from recurring in it, so its summed update stays small."""
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
        reach = rng.integers(1, w + 1, size=(n_blocks, block), dtype=np.int32)
        noise = sample_noise(noise_cdf, (n_blocks, noise_per_block(s)), rng)
        order = rng.permutation(n_blocks)
        n_batches = -(-n_blocks // per_batch)
        for b in range(n_batches):
            chosen = order[b * per_batch : (b + 1) * per_batch]
            rows = chosen[:, None] * block + offsets
            progress = (epoch + b / n_batches) / s.epochs
            alpha = s.alpha - (s.alpha - s.min_alpha) * progress
            yield _Job(ids[rows], sentence[rows], reach[chosen], noise[chosen], alpha, progress)


def run_training(
    corpus: Corpus,
    vocab: Vocabulary,
    s: Word2VecSettings,
    inputs: InputRows,
    output: torch.Tensor,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Train in place with `s.workers` threads; return the seconds spent."""
    trainer = _Trainer(s, inputs, output)
    keep, noise_cdf = vocab.keep_probabilities(s.sample), vocab.noise_cdf()
    jobs = _jobs(corpus, keep, noise_cdf, s, batch_size(vocab, s))
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
