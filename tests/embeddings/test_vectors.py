import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors as GensimVectors
from gensim.test.utils import datapath

from lmforge.embeddings import KeyedVectors
from lmforge.errors import LmforgeError
from tests.numerics import assert_reordered_close, reorder_bound


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)] + ["naïve", "café", "king's"]
    return KeyedVectors(words, rng.standard_normal((len(words), 16)).astype(np.float32))


def _gensim(kv: KeyedVectors) -> GensimVectors:
    ref = GensimVectors(kv.dim)
    ref.add_vectors(kv.words, kv.vectors)
    return ref


@pytest.mark.parametrize("fmt", ["word2vec-binary", "word2vec-text"])
def test_our_files_load_in_gensim_with_identical_vectors(vectors, tmp_path, fmt):
    path = vectors.save(tmp_path / "v", fmt)
    ref = GensimVectors.load_word2vec_format(str(path), binary=fmt == "word2vec-binary")
    assert ref.index_to_key == vectors.words
    np.testing.assert_array_equal(ref.vectors, vectors.vectors)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temporary file left


def test_glove_files_load_in_gensim(vectors, tmp_path):
    path = vectors.save(tmp_path / "glove.txt", "glove")
    ref = GensimVectors.load_word2vec_format(str(path), binary=False, no_header=True)
    assert ref.index_to_key == vectors.words
    np.testing.assert_array_equal(ref.vectors, vectors.vectors)


@pytest.mark.parametrize("binary", [True, False])
def test_we_load_gensim_files_with_identical_vectors(vectors, tmp_path, binary):
    path = tmp_path / "gensim.vec"
    _gensim(vectors).save_word2vec_format(str(path), binary=binary)
    loaded = KeyedVectors.load(path)  # the format is detected
    assert loaded.words == vectors.words
    np.testing.assert_array_equal(loaded.vectors, vectors.vectors)


@pytest.mark.parametrize(
    "name,binary,header",
    [
        ("high_precision.kv.bin", True, True),
        ("high_precision.kv.txt", False, True),
        ("euclidean_vectors.bin", True, True),
        ("test_glove.txt", False, False),
    ],
)
def test_we_read_the_files_gensim_ships_as_gensim_does(name, binary, header):
    ref = GensimVectors.load_word2vec_format(datapath(name), binary=binary, no_header=not header)
    ours = KeyedVectors.load(datapath(name))
    assert ours.words == ref.index_to_key
    np.testing.assert_array_equal(ours.vectors, ref.vectors)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside gensim's cosmul
def test_neighbours_similarity_and_analogies_agree_with_gensim(vectors):
    ref = _gensim(vectors)
    ours = vectors.most_similar(["w1", "w2"], ["w3"], topn=8)
    theirs = ref.most_similar(positive=["w1", "w2"], negative=["w3"], topn=8)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    # cosines of 16-dim fp32 vectors, one a mean of 3 unit vectors: the mean, the norms
    # and the dot product, summed in gensim's order and in ours (tests/numerics.py)
    cosine = [3, 16, 16, 16]
    assert_reordered_close([s for _, s in ours], [s for _, s in theirs], cosine, scale=1.0)
    got, want = vectors.similarity("w4", "café"), ref.similarity("w4", "café")
    assert_reordered_close(torch.tensor(got), torch.tensor(want), cosine, scale=1.0)

    add = vectors.analogy("w5", "w6", "w7", "3cosadd", topn=5)
    assert [w for w, _ in add] == [
        w for w, _ in ref.most_similar(positive=["w6", "w7"], negative=["w5"], topn=5)
    ]
    mul = vectors.analogy("w5", "w6", "w7", "3cosmul", topn=5)
    ref_mul = ref.most_similar_cosmul(positive=["w6", "w7"], negative=["w5"], topn=5)
    assert [w for w, _ in mul] == [w for w, _ in ref_mul]
    # 3CosMul: a product of two (1 + cos) / 2 over a third plus 1e-6; the relative errors
    # of the three cosines add, each amplified by 1 / (1 + cos), which exceeds 10 only
    # for cosines under -0.9, which 16-dim random vectors do not reach
    np.testing.assert_allclose(
        [s for _, s in mul], [s for _, s in ref_mul], rtol=3 * 10 * reorder_bound([16] * 3, 1.0)
    )


def test_unknown_word_names_itself(vectors):
    with pytest.raises(KeyError, match="'nope' is not in the vocabulary"):
        vectors.most_similar("nope")


@pytest.mark.parametrize(
    "content,fmt,message",
    [
        (b"", None, "empty"),
        (b"2 3\nw 1 2 3\n", "word2vec-text", "announces 2 words but the file holds 1"),
        (b"1 3\nw 1 2\n", "word2vec-text", "3 fields, expected a word and 3 numbers"),
        (b"w 1 2 3\nv 1 x 3\n", "glove", "not numbers"),
        (b"w 1 2 3\n", "word2vec-binary", "first line should be '<words> <dim>'"),
        (b"2 3\nw \x00\x00\x80?\x00\x00", "word2vec-binary", "cut short"),
        (b"\xff\xfe garbage", "glove", "not UTF-8"),
    ],
)
def test_a_file_of_the_wrong_format_is_a_clear_error(tmp_path, content, fmt, message):
    path = tmp_path / "bad.vec"
    path.write_bytes(content)
    with pytest.raises(LmforgeError, match=message):
        KeyedVectors.load(path, fmt)


def test_words_the_formats_cannot_hold_are_refused_before_writing(tmp_path):
    kv = KeyedVectors(["two words"], np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(LmforgeError, match="no whitespace"):
        kv.save(tmp_path / "v.bin")
    assert list(tmp_path.iterdir()) == []
