import numpy as np
import pytest
import torch
from gensim.models import Word2Vec

from lmforge.embeddings import KeyedVectors, Word2VecSettings, train_word2vec
from lmforge.embeddings import word2vec as w2v
from lmforge.embeddings.fasttext import FastTextSettings, _SubwordInputs, _Subwords
from lmforge.embeddings.vocab import Vocabulary
from lmforge.errors import LmforgeError
from tests.numerics import assert_reordered_close

from .conftest import ANIMALS, TOOLS


def _reference_step(job, trainer, inputs, output, sg):
    """The same update written pair by pair with autograd: alpha times the gradient of
    sum log s(u . v) over the window pairs + sum over the block's K noise words of
    (pairs * k / K) log s(-u . n) (skip-gram), or its CBOW form with u the mean context,
    where, as in word2vec.c, each context word receives the whole gradient of the mean."""
    s = trainer.s
    B, w, K = trainer.block, s.window, trainer.noise
    reach, noise = job.reach, job.noise
    I = inputs.clone().requires_grad_()
    O = output.clone().requires_grad_()
    objective = 0
    for b, (ids, sentence) in enumerate(zip(job.ids, job.sentence)):
        for i in range(B):
            c = w + i
            window = [
                c + o
                for o in range(-w, w + 1)
                if o and abs(o) <= reach[b, i] and sentence[c + o] == sentence[c]
            ]
            if not window:
                continue
            if sg:
                u = I[ids[c]]
                for j in window:
                    objective = objective + torch.nn.functional.logsigmoid(u @ O[ids[j]])
                weight = len(window) * s.negative / K
            else:
                ctx = torch.stack([I[ids[j]] for j in window])
                u = ctx.sum(0) - ctx.sum(0).detach() + ctx.mean(0).detach()
                objective = objective + torch.nn.functional.logsigmoid(u @ O[ids[c]])
                weight = s.negative / K
            for n in noise[b]:
                objective = objective + weight * torch.nn.functional.logsigmoid(-u @ O[n])
    objective.backward()
    return inputs + job.alpha * I.grad, output + job.alpha * O.grad


def _step_lengths(trainer, rows: int) -> list[int]:
    """A step's reductions (tests/numerics.py): the dot products (dim), then each row's
    gradient, a sum over at most every pair of the job (window and noise words)."""
    s = trainer.s
    return [s.dim, rows * trainer.block * (2 * s.window + trainer.noise)]


@pytest.mark.parametrize("sg", [True, False])
def test_one_vectorised_step_is_the_gradient_step_of_the_objective(sg):
    torch.manual_seed(0)
    vocab_size, dim = 40, 8
    inputs, output = torch.randn(vocab_size, dim) * 0.3, torch.randn(vocab_size, dim) * 0.3
    s = Word2VecSettings(dim=dim, window=2, negative=3, sg=sg)
    trainer = w2v._Trainer(s, w2v.InputRows(inputs.clone()), output.clone())
    rng = np.random.default_rng(1)
    shape = (3, trainer.block + 2 * s.window)
    ids = rng.integers(0, vocab_size, size=shape)
    sentence = np.sort(rng.integers(0, 3, size=shape), axis=1)
    sentence[0, :2] = -1  # padding before the stream's start
    reach = rng.integers(1, s.window + 1, size=(shape[0], trainer.block))
    noise = rng.integers(0, vocab_size, size=(shape[0], trainer.noise))
    job = w2v._Job(ids, sentence, reach, noise, alpha=0.1, progress=0.0)
    with torch.no_grad():
        trainer.step(job)
    want_inputs, want_output = _reference_step(job, trainer, inputs, output, sg)
    lengths = _step_lengths(trainer, shape[0])
    assert_reordered_close(trainer.inputs.matrix, want_inputs, lengths)
    assert_reordered_close(trainer.output, want_output, lengths)


@pytest.mark.parametrize("sg", [True, False])
def test_fasttext_without_ngrams_takes_word2vecs_step(sg):
    """The subword input side (FastText's) with no n-grams is Word2Vec's: the same step."""
    torch.manual_seed(0)
    vocab_size, dim = 40, 8
    inputs, output = torch.randn(vocab_size, dim) * 0.3, torch.randn(vocab_size, dim) * 0.3
    s = FastTextSettings(dim=dim, window=2, negative=3, sg=sg, workers=1, min_n=3, max_n=2)
    subwords = _Subwords([f"w{i}" for i in range(vocab_size)], s)
    plain = w2v._Trainer(s, w2v.InputRows(inputs.clone()), output.clone())
    sub = w2v._Trainer(s, _SubwordInputs(inputs.clone(), subwords, s.workers), output.clone())
    rng = np.random.default_rng(2)
    shape = (2, plain.block + 2 * s.window)
    sentence = np.sort(rng.integers(0, 3, size=shape), axis=1)
    reach = rng.integers(1, s.window + 1, size=(shape[0], plain.block))
    noise = rng.integers(0, vocab_size, size=(shape[0], plain.noise))
    job = w2v._Job(rng.integers(0, vocab_size, size=shape), sentence, reach, noise, 0.1, 0.0)
    with torch.no_grad():
        plain.step(job)
        sub.step(job)
    lengths = _step_lengths(plain, shape[0])
    assert_reordered_close(sub.inputs.matrix, plain.inputs.matrix, lengths)
    assert_reordered_close(sub.output, plain.output, lengths)


def test_batches_shrink_so_the_most_frequent_word_recurs_a_bounded_number_of_times():
    vocab = Vocabulary(["the"] + [f"w{i}" for i in range(999)], [5000] + [500] * 999)
    for sample, workers in ((0.0, 1), (1e-3, 1), (1e-3, 3)):
        s = Word2VecSettings(sample=sample, batch_words=100_000, workers=workers)
        kept = vocab.keep_probabilities(sample) * vocab.counts
        noise = vocab.counts**0.75
        top_share = max(kept.max() / kept.sum(), noise.max() / noise.sum())
        batch = w2v.batch_size(vocab, s)
        in_flight = top_share * workers  # occurrences per centre, all workers' batches
        assert batch % w2v.BLOCK_SG == 0 and batch > w2v.BLOCK_SG
        assert batch * in_flight <= w2v.MAX_REPEATS < (batch + w2v.BLOCK_SG) * in_flight
    # CBOW, with the last settings above (sample 1e-3, 3 workers), allows more repeats
    batch = w2v.batch_size(vocab, Word2VecSettings(sg=False, batch_words=100_000, workers=3))
    assert batch % w2v.BLOCK_CBOW == 0
    assert batch * in_flight <= w2v.MAX_REPEATS_CBOW < (batch + w2v.BLOCK_CBOW) * in_flight
    flat = Vocabulary([f"w{i}" for i in range(1000)], [50] * 1000)
    assert w2v.batch_size(flat, Word2VecSettings(batch_words=40)) == 32  # the user's bound


def _topic_separation(vectors) -> tuple[float, float]:
    unit = vectors.unit
    a = unit[[vectors.index[w] for w in ANIMALS]]
    t = unit[[vectors.index[w] for w in TOOLS]]
    within = (a @ a.T)[np.triu_indices(len(ANIMALS), 1)].mean()
    across = (a @ t.T).mean()
    return float(within), float(across)


@pytest.mark.parametrize("sg", [True, False])
def test_training_separates_the_topics_like_gensim(topic_sentences, sg):
    # One worker each: lock-free threads make results depend on timing (a flaky test).
    ours = train_word2vec(topic_sentences, dim=20, epochs=5, workers=1, sg=sg).vectors
    ref = Word2Vec(topic_sentences, vector_size=20, epochs=5, workers=1, sg=int(sg), seed=1)
    theirs = KeyedVectors(ref.wv.index_to_key, ref.wv.vectors)
    within, across = _topic_separation(ours)
    ref_within, ref_across = _topic_separation(theirs)
    assert within - across > 0.5 * (ref_within - ref_across) > 0
    for word in ("cat", "hammer"):
        topic = ANIMALS if word in ANIMALS else TOOLS
        assert {w for w, _ in ours.most_similar(word, topn=5)} <= set(topic)


def test_one_worker_is_reproducible(topic_sentences):
    first = train_word2vec(topic_sentences[:500], dim=8, epochs=1, workers=1, seed=3)
    again = train_word2vec(topic_sentences[:500], dim=8, epochs=1, workers=1, seed=3)
    np.testing.assert_array_equal(first.vectors.vectors, again.vectors.vectors)
    assert first.stats.raw_words == 500 * 12


def test_bad_settings_are_clear_errors(topic_sentences):
    with pytest.raises(LmforgeError, match="unknown setting.*dims"):
        train_word2vec(topic_sentences, dims=10)
    with pytest.raises(LmforgeError, match="window must be at least 1"):
        train_word2vec(topic_sentences, window=0)
    with pytest.raises(LmforgeError, match="min_count=100000 leaves no vocabulary"):
        train_word2vec(topic_sentences, min_count=100_000)
