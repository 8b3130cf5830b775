import json

import numpy as np
import pytest
from gensim.models import KeyedVectors as GensimVectors

from lmforge.cli import main
from lmforge.cli.embeddings import parse_expression


@pytest.fixture
def corpus(tmp_path, topic_sentences):
    path = tmp_path / "topics.txt"
    path.write_text("\n\n".join(" ".join(s) for s in topic_sentences[:1500]) + "\n")
    return path


FAST = ["--dim", "16", "--epochs", "2", "--workers", "1"]


def test_train_then_query(corpus, tmp_path, capsys):
    out = tmp_path / "w2v"
    assert main(["embeddings", "train", str(corpus), "--output", str(out), *FAST]) == 0
    assert "word2vec skipgram: 24 words x 16" in capsys.readouterr().out
    meta = json.loads((out / "embeddings.json").read_text())
    assert meta["algorithm"] == "word2vec" and meta["settings"]["dim"] == 16
    ref = GensimVectors.load_word2vec_format(str(out / "vectors.bin"), binary=True)
    assert len(ref) == 24

    assert main(["embeddings", "query", str(out), "cat", "--topn", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ours = [line.split() for line in lines]
    theirs = ref.most_similar("cat", topn=3)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    # printed with 4 decimals: half a unit of the last place, plus the cosines' rounding
    # (tests/numerics.py: a 16-term dot product and two norms, each well under 1e-5)
    np.testing.assert_allclose(
        [float(s) for _, s in ours], [s for _, s in theirs], atol=5e-5 + 1e-5
    )

    assert (
        main(["embeddings", "query", str(out / "vectors.bin"), "Dog", "-", "cat", "+", "saw"]) == 0
    )
    expected = ref.most_similar(positive=["dog", "saw"], negative=["cat"], topn=10)
    assert capsys.readouterr().out.split()[0] == expected[0][0]


def test_fasttext_and_glove_formats(corpus, tmp_path, capsys):
    ft = tmp_path / "ft"
    args = ["--format", "word2vec-text", "--bucket", "20000", "--model", "cbow"]
    assert main(["embeddings", "train", str(corpus), "--algorithm", "fasttext", "--output",
                 str(ft), *FAST, *args]) == 0  # fmt: skip
    assert main(["embeddings", "query", str(ft), "hammerish"]) == 0  # unseen, from n-grams
    glove = tmp_path / "glove"
    assert main(["embeddings", "train", str(corpus), "--algorithm", "glove", "--output",
                 str(glove), *FAST, "--format", "glove"]) == 0  # fmt: skip
    ref = GensimVectors.load_word2vec_format(
        str(glove / "vectors.glove.txt"), binary=False, no_header=True
    )
    assert len(ref) == 24
    capsys.readouterr()


def test_expressions():
    assert parse_expression(["king", "-", "man", "+", "woman"]) == (["king", "woman"], ["man"])
    assert parse_expression(["king+woman", "-", "man"]) == (["king", "woman"], ["man"])
    assert parse_expression(["-", "man"]) == ([], ["man"])


@pytest.mark.parametrize(
    "text,extra,message",
    [
        ("  \n\n ", [], "holds no text"),
        ("123 456 -- !!\n", [], "holds no words"),
        ("a few words only\n", ["--min-count", "5"], "min_count=5 leaves no vocabulary"),
        ("cat dog\n" * 20, ["--window", "0"], "window must be at least 1"),
    ],
)
def test_bad_corpus_or_settings_exit_2_and_write_nothing(tmp_path, capsys, text, extra, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["embeddings", "train", str(path), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error:") and message in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]


def test_query_errors_exit_2(corpus, tmp_path, capsys):
    bad = tmp_path / "bad.vec"
    bad.write_text("3 4\nnot a vectors file\n")
    assert main(["embeddings", "query", str(bad), "cat"]) == 2
    assert "fields, expected a word and 4 numbers" in capsys.readouterr().err
    assert main(["embeddings", "query", str(tmp_path), "cat"]) == 2
    assert "holds no embeddings.json" in capsys.readouterr().err

    out = tmp_path / "w2v"
    main(["embeddings", "train", str(corpus), "--output", str(out), *FAST])
    assert main(["embeddings", "query", str(out), "unicorn"]) == 2
    assert "'unicorn' is not in the vocabulary of 24 words" in capsys.readouterr().err


def test_output_that_is_not_an_embeddings_directory_is_kept(corpus, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["embeddings", "train", str(corpus), "--output", str(out), *FAST]) == 2
    assert "is not an embeddings directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # an embeddings directory is replaced whole
    again = tmp_path / "again"
    for _ in range(2):
        assert main(["embeddings", "train", str(corpus), "--output", str(again), *FAST]) == 0
    assert sorted(p.name for p in again.iterdir()) == ["embeddings.json", "vectors.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "precious", "topics.txt"]
