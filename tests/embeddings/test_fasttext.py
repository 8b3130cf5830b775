import numpy as np
import pytest
from gensim.models.fasttext import compute_ngrams, ft_hash_bytes, ft_ngram_hashes

from lmforge.embeddings import FastTextVectors, load_embeddings, save_embeddings, train_fasttext
from lmforge.embeddings.fasttext import char_ngrams, fnv1a_32
from tests.numerics import assert_reordered_close

from .conftest import ANIMALS, TOOLS

WORDS = ["where", "king's", "naïve", "日本語", "a", "hammer", "ŵëird"]


def test_ngrams_and_hashes_match_gensims_fasttext():
    for word in WORDS:
        assert char_ngrams(word, 3, 6) == compute_ngrams(word, 3, 6)
    grams = [g for w in WORDS for g in char_ngrams(w, 1, 6)]
    assert list(fnv1a_32(grams)) == [ft_hash_bytes(g.encode("utf-8")) for g in grams]


@pytest.fixture(scope="module")
def trained(topic_sentences):
    # words sharing a root, so unseen forms have n-grams that training met
    sentences = [s + [s[0] + "ish", s[1] + "ness"] for s in topic_sentences]
    return train_fasttext(sentences, dim=16, epochs=2, bucket=50_000, workers=1)  # repeatable


def test_unseen_words_get_the_mean_of_their_known_ngram_vectors(trained):
    vectors = trained.vectors
    assert "hammerishness" not in vectors.index and "hammerishness" in vectors
    table = vectors.ngram_vectors
    buckets = ft_ngram_hashes("hammerishness", 3, 6, vectors.bucket)  # gensim's bucket choice
    rows = [int(np.searchsorted(vectors.used_buckets, b)) for b in buckets]
    known = [r for r, b in zip(rows, buckets) if r < len(table) and vectors.used_buckets[r] == b]
    assert len(known) > 5
    # a mean of the known rows, summed in another order than numpy's
    want = table[known].mean(0)
    assert_reordered_close(vectors["hammerishness"], want, [len(known)], np.abs(table).max())
    with pytest.raises(KeyError, match="none of its n-grams"):
        vectors["qqqqqq"]


def test_word_vectors_are_means_of_their_rows_and_neighbours_share_topics(trained):
    vectors = trained.vectors
    for word in ("cat", "hammer"):
        topic = ANIMALS if word in ANIMALS else TOOLS
        neighbours = [w for w, _ in vectors.most_similar(word, topn=20)]
        same = [w for w in neighbours if w.removesuffix("ness").removesuffix("ish") in topic]
        assert len(same) >= 10, neighbours
    # "cattish" was never seen: its neighbours come from its n-grams, shared with "cat..."
    assert vectors.similarity("cattish", "catish") > vectors.similarity("cattish", "hammerish")


def test_the_ngram_table_survives_a_round_trip(trained, tmp_path):
    save_embeddings(trained, tmp_path / "ft", "fasttext")
    loaded = load_embeddings(tmp_path / "ft")
    assert isinstance(loaded, FastTextVectors)
    np.testing.assert_array_equal(loaded.vectors, trained.vectors.vectors)
    np.testing.assert_array_equal(loaded["hammerishness"], trained.vectors["hammerishness"])
