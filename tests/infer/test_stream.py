"""Streaming decode: the pieces add up to the full decode, and never split a character."""

import pytest

from lmforge.infer.stream import TextStream
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.wordpiece import WordPieceTokenizer
from tests.tokenizers.test_wordpiece import _model_dir

TEXTS = [
    "But soft, what light through yonder window breaks?",
    "emoji 😀👍🏽 family 👨‍👩‍👧, CJK 日本語のテキスト, accents café naïve",
    "  spaces   and\nnew lines\t\ttabs ",
]
TRAIN = ["the quick brown fox jumps over the lazy dog " * 3, "a light in the window " * 3]


@pytest.fixture(scope="module", params=["bpe", "unigram", "char", "wordpiece"])
def tokenizer(request):
    if request.param == "wordpiece":  # the real BERT vocabulary
        return WordPieceTokenizer.from_vocab_file(_model_dir() / "vocab.txt")
    if request.param == "char":
        return Tokenizer.train(TRAIN + TEXTS, "char")
    # Small vocabularies, so most characters are split over several tokens.
    return Tokenizer.train(TRAIN, request.param, vocab_size=300 if request.param == "bpe" else 60)


def stream_all(tokenizer, ids, stop_strings=()):
    stream = TextStream(tokenizer, stop_strings)
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.finish())
    return pieces, stream


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_add_up_to_the_whole_decode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces, stream = stream_all(tokenizer, ids)
    whole = tokenizer.decode(ids)
    assert "".join(pieces) == whole == stream.text
    if "\ufffd" not in whole:
        assert not any("\ufffd" in p for p in pieces)  # no character cut in two
    assert sum(bool(p) for p in pieces) > len(ids) / 4  # it streams, not all at the end


def test_invalid_bytes_mid_stream_do_not_stall_or_crash():
    tok = Tokenizer.train(TRAIN, "bpe", vocab_size=300)
    continuation = next(i for i in range(tok.vocab_size) if tok.decode([i]) == "\ufffd")
    ids = tok.encode("ok ") + [continuation] * 6 + tok.encode(" fine") + [continuation]
    pieces, stream = stream_all(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    head = len(tok.encode("ok "))
    assert "ok" in "".join(pieces[:head])
    assert "\ufffd" in "".join(pieces[: head + 6])  # bad bytes go out, not held forever


def test_stop_strings_end_the_stream_before_them():
    tok = Tokenizer.train(TRAIN + ["the fox. END ENd"], "char")
    ids = tok.encode("the fox. END the rest")
    pieces, stream = stream_all(tok, ids, stop_strings=["END", "zz"])
    assert "".join(pieces) == "the fox. " == stream.text
    assert stream.stopped
    # A partial match is held back, then let go when it turns out not to be one.
    pieces, stream = stream_all(tok, tok.encode("the ENd"), stop_strings=["END"])
    assert "".join(pieces) == "the ENd" and not stream.stopped
    assert pieces[tok.encode("the ENd").index(tok.token_to_id("E"))] == ""
