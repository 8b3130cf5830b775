import pytest

import tokenizers as hf_tokenizers
from lmforge.errors import LmforgeError
from lmforge.tokenizers import EOT, CharTokenizer, Tokenizer

TRAIN = ["Hello, world!\nñandú 😀 日本語\ttab", "ROMEO:\nBut soft!"]
SAMPLES = [
    "Hello\n  world",
    "😀😀 日本",
    "unseen: Ωψ∑",
    "",
    "\t\n\r\n",
    "a<|endoftext|>b<unk>c<|end",
]


@pytest.fixture
def tok():
    return Tokenizer.train(TRAIN, algorithm="char")


def test_special_tokens_are_never_split(tok):
    eot, unk = tok.eot_id, tok.token_to_id("<unk>")
    assert tok.encode("H<|endoftext|><|endoftext|>e") == [
        tok.token_to_id("H"),
        eot,
        eot,
        tok.token_to_id("e"),
    ]
    assert tok.encode("<unk>") == [unk]


def test_round_trip_and_unknown(tok):
    assert isinstance(tok, CharTokenizer)
    for text in SAMPLES[:2]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("Ω")
    assert ids == [tok.token_to_id("<unk>")]
    assert tok.vocab_size == len(set("".join(TRAIN))) + 2  # + <|endoftext|> + <unk>
    assert tok.eot_id == tok.token_to_id(EOT) == 0


def test_huggingface_tokenizers_reads_our_file(tok, tmp_path):
    tok.save(tmp_path)
    reference = hf_tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in SAMPLES + TRAIN:
        assert reference.encode(text).ids == tok.encode(text), text
    assert reference.get_vocab_size() == tok.vocab_size


def test_save_load(tok, tmp_path):
    tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    for text in SAMPLES:
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.special_tokens == tok.special_tokens


def test_token_bytes(tok):
    sizes = tok.token_bytes()
    assert sizes[tok.eot_id] == 0
    assert sizes[tok.token_to_id("😀")] == 4 and sizes[tok.token_to_id("ñ")] == 2
    text = "Hello ñandú 😀"
    assert sum(sizes[i] for i in tok.encode(text)) == len(text.encode("utf-8"))


def test_load_errors(tmp_path):
    with pytest.raises(LmforgeError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"ty')
    with pytest.raises(LmforgeError, match="corrupt"):
        Tokenizer.load(tmp_path)


def test_unknown_algorithm_and_small_vocab():
    with pytest.raises(LmforgeError, match="unknown tokenizer algorithm"):
        Tokenizer.train(TRAIN, algorithm="nope")
    with pytest.raises(LmforgeError, match="distinct characters"):
        Tokenizer.train(TRAIN, algorithm="char", vocab_size=5)


def test_format_version_and_foreign_files(tmp_path):
    import json

    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "2.0", "model": {}}))
    with pytest.raises(LmforgeError, match="format version 2.0"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 1}}))
    with pytest.raises(LmforgeError, match="not a Hugging Face tokenizer.json"):
        Tokenizer.load(tmp_path)


@pytest.mark.parametrize("specials", [[""], ["<a>", "<a>"]])
def test_bad_special_tokens(specials):
    with pytest.raises(LmforgeError, match="special tokens must be distinct"):
        Tokenizer.train(TRAIN, algorithm="char", special_tokens=specials)


def test_encode_batch_pauses_the_cyclic_gc_and_restores_it(tok):
    import gc

    seen = []
    original = type(tok).encode

    def spy(self, text, add_special_tokens=True):
        seen.append(gc.isenabled())
        if text == "boom":
            raise ValueError("boom")
        return original(self, text, add_special_tokens)

    type(tok).encode = spy
    try:
        assert tok.encode_batch(["ab", "ba"]) == [tok.encode("ab"), tok.encode("ba")]
        assert seen[:2] == [False, False] and gc.isenabled()
        with pytest.raises(ValueError):
            tok.encode_batch(["boom"])
        assert gc.isenabled()  # back on after an error too
        gc.disable()
        tok.encode_batch(["ab"])
        assert not gc.isenabled()  # left off when it was off
    finally:
        gc.enable()
        type(tok).encode = original
