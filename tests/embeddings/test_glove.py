from collections import defaultdict

import numpy as np
import pytest
import torch

from lmforge.embeddings import GloveSettings, Vocabulary, cooccurrence, train_glove
from lmforge.embeddings import glove as glove_module
from lmforge.errors import LmforgeError

from .conftest import ANIMALS, TOOLS


def test_cooccurrence_counts_match_a_pair_by_pair_count():
    rng = np.random.default_rng(0)
    words = list("abcdefg")
    sentences = [list(rng.choice(words, size=rng.integers(1, 15))) for _ in range(200)]
    sentences.append(["zz"])  # a rare word is dropped before counting, like word2vec
    vocab = Vocabulary.build(sentences, min_count=2)
    corpus = vocab.encode(sentences)
    window = 3
    expected = defaultdict(float)
    for sentence in sentences:
        kept = [vocab.index[w] for w in sentence if w in vocab.index]
        for i, a in enumerate(kept):
            for d in range(1, window + 1):
                if i + d < len(kept):
                    expected[a, kept[i + d]] += 1 / d
                    expected[kept[i + d], a] += 1 / d
    counts = cooccurrence(corpus, len(vocab), window)
    got = {(int(r), int(c)): v for r, c, v in zip(counts.rows, counts.cols, counts.values)}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_cooccurrence_chunks_add_up(monkeypatch):
    sentences = [list("abcabcab"), list("cab"), list("bcabca")]
    vocab = Vocabulary.build(sentences, min_count=1)
    corpus = vocab.encode(sentences)
    whole = cooccurrence(corpus, len(vocab), 4)
    monkeypatch.setattr(glove_module, "_CHUNK", 3)  # cut the stream every 3 positions
    chunked = cooccurrence(corpus, len(vocab), 4)
    np.testing.assert_array_equal(chunked.rows, whole.rows)
    np.testing.assert_allclose(chunked.values, whole.values)


def test_one_step_is_adagrad_on_the_weighted_least_squares():
    s = GloveSettings(dim=6, alpha=0.1)
    model = glove_module._Glove(10, s)
    before_w, before_c = model.w.clone(), model.c.clone()
    i, j = torch.tensor([1, 2, 1, 7]), torch.tensor([3, 3, 4, 1])
    x = torch.tensor([5.0, 120.0, 1.0, 30.0])
    f = torch.clamp((x / s.x_max) ** s.weight_power, max=1)
    model.step((i, j, x.log(), f.clone()))

    # reference: autograd of J = 1/2 sum f (w.c + b + b' - log x)^2 over w, c, b, b'
    w = before_w[:, :6].clone().requires_grad_()
    c = before_c[:, :6].clone().requires_grad_()
    bw = before_w[:, 6].clone().requires_grad_()  # rows are [w, b, 1] and [c, 1, b']
    bc = before_c[:, 7].clone().requires_grad_()
    diff = (w[i] * c[j]).sum(1) + bw[i] + bc[j] - x.log()
    (0.5 * (f * diff**2).sum()).backward()
    # AdaGrad from sums of squares that start at 1: a row's entries in one batch all use
    # the sums from before the batch
    for got, start, grad in (
        (model.w[:, :6], before_w[:, :6], w.grad),
        (model.c[:, :6], before_c[:, :6], c.grad),
        (model.w[:, 6], before_w[:, 6], bw.grad),
        (model.c[:, 7], before_c[:, 7], bc.grad),
    ):
        torch.testing.assert_close(got, start - s.alpha * grad)  # first step: sqrt(1) = 1
    assert torch.all(model.w[:, 7] == 1) and torch.all(model.c[:, 6] == 1)
    assert model.loss == pytest.approx(0.5 * float((f * diff.detach() ** 2).sum()), rel=1e-5)


def test_training_separates_topics(topic_sentences):
    # One worker: two lock-free threads make the result depend on their timing.
    vectors = train_glove(topic_sentences, dim=16, epochs=15, workers=1).vectors
    # GloVe fits only pairs that occur, and every word meets the same filler words, so the
    # vectors share a large common part; compare what is left after removing it
    centred = vectors.vectors - vectors.vectors.mean(0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    animals = centred[[vectors.index[w] for w in ANIMALS]]
    tools = centred[[vectors.index[w] for w in TOOLS]]
    upper = np.triu_indices(len(ANIMALS), 1)
    within = np.concatenate([(animals @ animals.T)[upper], (tools @ tools.T)[upper]]).mean()
    assert within > (animals @ tools.T).mean() + 0.3


def test_text_without_neighbours_is_a_clear_error():
    with pytest.raises(LmforgeError, match="no two words share a sentence"):
        train_glove([["a"], ["b"], ["a"]], min_count=1)
