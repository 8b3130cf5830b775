import json

import numpy as np
import pytest

from lmforge.data import WindowSampler, eval_windows, open_split, write_split
from lmforge.errors import LmforgeError


def docs(n=3, length=50, vocab=300, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(1, vocab, length), length * 2) for _ in range(n)]


@pytest.mark.parametrize(
    ("vocab", "dtype"), [(300, "uint16"), (2**16, "uint16"), (70000, "uint32")]
)
def test_dtype_follows_vocabulary(tmp_path, vocab, dtype):
    written = docs(vocab=vocab)
    info = write_split(tmp_path, "train", written, vocab, separator=0)
    tokens, read_info = open_split(tmp_path, "train")
    assert info == read_info and info.dtype == dtype and tokens.dtype == np.dtype(dtype)
    expected = np.concatenate([np.concatenate([[0], ids]) for ids, _ in written])
    np.testing.assert_array_equal(tokens, expected)
    assert info.tokens == 153 and info.documents == 3 and info.text_bytes == 300
    assert json.loads((tmp_path / "train.json").read_text())["dtype"] == dtype


def test_truncated_shard_is_detected(tmp_path):
    write_split(tmp_path, "train", docs(), 300, separator=0)
    path = tmp_path / "train.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(LmforgeError, match="truncated"):
        open_split(tmp_path, "train")


def test_missing_shard(tmp_path):
    with pytest.raises(LmforgeError, match="missing or corrupt"):
        open_split(tmp_path, "valid")


def test_windows_are_reproducible_and_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    a = WindowSampler(tokens, 16, 4, seed=1)
    b = WindowSampler(tokens, 16, 4, seed=1)
    x1, y1 = a.batch(5, 0)
    x2, y2 = b.batch(5, 0)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert (y1[:, :-1] == x1[:, 1:]).all() and (y1[:, -1] == x1[:, -1] + 1).all()
    assert not (a.batch(6, 0)[0] == x1).all() and not (a.batch(5, 1)[0] == x1).all()
    assert not (WindowSampler(tokens, 16, 4, seed=2).batch(5, 0)[0] == x1).all()


def test_too_short_stream():
    with pytest.raises(LmforgeError, match="too few"):
        WindowSampler(np.arange(10), 16, 2, seed=0)


@pytest.mark.parametrize("n", [100, 101, 97, 33])
def test_eval_windows_predict_every_token_once(n):
    tokens = np.arange(n, dtype=np.uint16)
    targets = np.concatenate([y.reshape(-1).numpy() for _, y in eval_windows(tokens, 8, 3)])
    np.testing.assert_array_equal(targets, tokens[1:])
    for x, y in eval_windows(tokens, 8, 3):
        assert (y - x == 1).all()


def test_parallel_encoding_equals_serial():
    from lmforge.data import encode_documents
    from lmforge.tokenizers import Tokenizer

    texts = [f"document {i}: " + "some words and more words\n" * (i + 1) for i in range(12)]
    tok = Tokenizer.train(texts, "bpe", vocab_size=300)
    serial = list(encode_documents(tok, texts, workers=1))
    pooled = list(encode_documents(tok, texts, workers=2, parallel_from=0))
    assert len(pooled) == len(texts)
    for (a, na), (b, nb), text in zip(serial, pooled, texts, strict=True):
        np.testing.assert_array_equal(a, b)
        assert na == nb == len(text.encode())
        assert a.tolist() == tok.encode(text)
