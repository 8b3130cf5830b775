import numpy as np
import pytest
from gensim.models import Word2Vec

from lmforge.embeddings.vocab import Vocabulary, sample_noise, subsample, tokenize
from lmforge.errors import LmforgeError


def test_tokenize_splits_sentences_at_blank_lines_and_keeps_inner_apostrophes():
    text = "KING:\nThe king's men, 3 of them --\nO'er the hill.\n\n\n[Exeunt]  \n"
    assert tokenize(text) == [
        ["king", "the", "king's", "men", "of", "them", "o'er", "the", "hill"],
        ["exeunt"],
    ]
    assert tokenize("  \n\n 42 -- !\n") == []


def _gensim_vocab(sentences, min_count, sample=1e-3):
    model = Word2Vec(vector_size=4, min_count=min_count, sample=sample)
    model.build_vocab(sentences)
    return model


def test_vocabulary_counts_keep_probabilities_and_noise_match_gensim(topic_sentences):
    sentences = topic_sentences + [["rare"], ["rarer", "rare"]]
    vocab = Vocabulary.build(sentences, min_count=2)
    ref = _gensim_vocab(sentences, min_count=2)
    counts = {w: int(c) for w, c in zip(vocab.words, vocab.counts)}
    assert counts == {w: int(ref.wv.get_vecattr(w, "count")) for w in ref.wv.index_to_key}
    assert list(vocab.counts) == sorted(vocab.counts, reverse=True)

    # gensim stores the keep probability as a fraction of 2**32
    keep = dict(zip(vocab.words, vocab.keep_probabilities(1e-3)))
    for word in vocab.words:
        assert keep[word] == pytest.approx(ref.wv.get_vecattr(word, "sample_int") / 2**32, 1e-6)
    assert all(p == 1 for p in Vocabulary.build(sentences, 2).keep_probabilities(0))

    # gensim's cumulative noise table follows its own word order; compare per-word mass
    ours_mass = np.diff(np.concatenate([[0], vocab.noise_cdf()]))
    ref_mass = np.diff(np.concatenate([[0], ref.cum_table / ref.cum_table[-1]]))
    ref_by_word = dict(zip(ref.wv.index_to_key, ref_mass))
    for word, mass in zip(vocab.words, ours_mass):
        assert mass == pytest.approx(ref_by_word[word], rel=1e-4)


def test_noise_samples_follow_the_distribution():
    vocab = Vocabulary(["a", "b", "c"], [81, 16, 1])
    draws = sample_noise(vocab.noise_cdf(), 200_000, np.random.default_rng(0))
    share = np.bincount(draws, minlength=3) / len(draws)
    expected = np.array([81, 16, 1]) ** 0.75 / (np.array([81, 16, 1]) ** 0.75).sum()
    np.testing.assert_allclose(share, expected, atol=0.005)


def test_encode_drops_rare_words_and_numbers_sentences():
    vocab = Vocabulary.build([["a", "b", "a"], ["b", "z", "a"]], min_count=2)
    corpus = vocab.encode([["a", "b", "a"], ["b", "z", "a"]])
    assert [vocab.words[i] for i in corpus.ids] == ["a", "b", "a", "b", "a"]
    assert list(corpus.sentence) == [0, 0, 0, 1, 1]
    assert corpus.raw_words == 6

    keep = np.array([1.0, 0.0], dtype=np.float32)  # keep every "a", drop every "b"
    kept = subsample(corpus, keep, np.random.default_rng(0))
    assert [vocab.words[i] for i in kept.ids] == ["a", "a", "a"]
    assert list(kept.sentence) == [0, 0, 1]


def test_empty_corpus_and_too_high_min_count_are_clear_errors():
    with pytest.raises(LmforgeError, match="no words"):
        Vocabulary.build([])
    with pytest.raises(LmforgeError, match="min_count=50 leaves no vocabulary.*occurs 2 times"):
        Vocabulary.build([["a", "b", "a"]], min_count=50)
