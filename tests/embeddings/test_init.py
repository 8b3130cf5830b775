import numpy as np
import pytest
import torch
from gensim.models.fasttext import ft_hash_bytes

from lmforge.embeddings import KeyedVectors, init_token_embedding, train_fasttext
from lmforge.errors import LmforgeError
from lmforge.tokenizers import Tokenizer
from tests.numerics import assert_reordered_close, assert_same

from .conftest import ANIMALS, FILLER, TOOLS

WORDS = ANIMALS + TOOLS + FILLER + ["hammers", "drilling", "cats", "sawing", "birds"]


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return KeyedVectors(WORDS, rng.standard_normal((len(WORDS), 12)).astype(np.float32))


def test_a_word_level_vocabulary_takes_the_words_vectors(vectors):
    tokens = ["<pad>", "cat", "Hammer", "unknownword", "the"]
    embedding = torch.nn.Embedding(len(tokens), 12)
    before = embedding.weight.detach().clone()
    assert init_token_embedding(embedding, tokens, vectors, rescale=False) == 3
    for i, word in ((1, "cat"), (2, "hammer"), (4, "the")):  # "Hammer": the lowercased word
        np.testing.assert_array_equal(embedding.weight[i].detach().numpy(), vectors[word])
    assert_same(embedding.weight[[0, 3]], before[[0, 3]])  # left alone
    mapping = {"cat": 0, "dog": 1}
    assert init_token_embedding(torch.nn.Embedding(2, 12), mapping, vectors) == 2


def test_wordpiece_pieces_take_the_mean_of_the_words_they_occur_in(vectors):
    tokenizer = Tokenizer.train([" ".join(WORDS) * 20], "wordpiece", 80)
    embedding = torch.nn.Embedding(tokenizer.vocab_size, 12)
    before = embedding.weight.detach().clone()
    count = init_token_embedding(embedding, tokenizer, vectors, rescale=False)

    expected = {}
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i)
        if token in tokenizer.special_tokens:
            continue
        if token.startswith("##"):  # continuation: words holding it after their first letter
            holders = [w for w in WORDS if token[2:] in w[1:]]
        elif token in vectors.index:
            expected[i] = vectors[token]
            continue
        else:  # word start: words beginning with it
            holders = [w for w in WORDS if w.startswith(token)]
        if holders:
            expected[i] = np.mean([vectors[w] for w in holders], axis=0)
    assert count == len(expected) > 20
    weight = embedding.weight.detach().numpy()
    for i, row in expected.items():
        # a mean of at most len(WORDS) vectors, summed in another order than numpy's
        assert_reordered_close(weight[i], row, [len(WORDS)], np.abs(vectors.vectors).max())
    untouched = [i for i in range(tokenizer.vocab_size) if i not in expected]
    assert_same(embedding.weight[untouched], before[untouched])


def test_fasttext_vectors_give_pieces_their_ngram_vectors(topic_sentences):
    trained = train_fasttext(topic_sentences, dim=8, epochs=1, bucket=10_000, workers=1)
    ft = trained.vectors
    embedding = torch.nn.Embedding(3, 8)
    assert init_token_embedding(embedding, ["##mer", "hamm", "cat"], ft, rescale=False) == 3

    def piece(text):  # the n-grams of the piece, bucketed by gensim's hash
        grams = [text[i : i + n] for n in range(3, 7) for i in range(len(text) - n + 1)]
        rows = [
            int(np.searchsorted(ft.used_buckets, ft_hash_bytes(g.encode()) % ft.bucket))
            for g in grams
        ]
        return ft.ngram_vectors[rows].mean(0)

    weight = embedding.weight.detach().numpy()
    scale = np.abs(ft.ngram_vectors).max()  # means of n-gram rows (at most 4 per letter)
    assert_reordered_close(weight[0], piece("mer"), [4 * 5], scale)
    assert_reordered_close(weight[1], piece("<hamm"), [4 * 5], scale)
    assert_reordered_close(weight[2], ft["cat"], [4 * 5], scale)


def test_rescaled_rows_match_the_embeddings_scale(vectors):
    embedding = torch.nn.Embedding(len(WORDS) + 50, 12)
    torch.nn.init.normal_(embedding.weight, std=0.02)
    init_token_embedding(embedding, WORDS, vectors)
    copied = embedding.weight[: len(WORDS)].detach()
    assert copied.std().item() == pytest.approx(0.02, rel=0.15)
    unit = torch.nn.functional.normalize(copied, dim=1)
    # a rescaled row, normalised: a scale, then a sum of 12 squares and a division, twice
    want = torch.nn.functional.normalize(torch.tensor(vectors.vectors))
    assert_reordered_close(unit, want, [1, 12, 1] * 2, scale=1.0)


def test_mismatched_shapes_are_clear_errors(vectors):
    with pytest.raises(LmforgeError, match="vectors have 12 dimensions but the embedding has 16"):
        init_token_embedding(torch.nn.Embedding(5, 16), WORDS, vectors)
    with pytest.raises(LmforgeError, match="embedding only 3 rows"):
        init_token_embedding(torch.nn.Embedding(3, 12), WORDS, vectors)
