"""Byte-level BPE against Hugging Face `tokenizers` and `tiktoken` on the same vocabulary."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizers as hf
from lmforge.errors import LmforgeError
from lmforge.text import load_shakespeare
from lmforge.tokenizers import BPETokenizer, Tokenizer

SAMPLE = [
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n[Exit]",
    "def f(x):\n\treturn x ** 2  # square\n\n\n    if x != 0:  pass",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "mixed: naïve café Ελληνικά русский עברית العربية हिन्दी",
    "whitespace   runs\t\t\tand\r\n\r\nline ends   \n",
    "numbers 1234567 3.14159 1e-9 ½ ² Ⅻ",
    "it's we're they've I'm you'll he'd IT'S",
    "special <|endoftext|> inside and <|endoftext|>",
    "",
    " ",
]


@pytest.fixture(scope="module")
def corpus():
    train, valid = load_shakespeare()
    return [d.text for d in train], [d.text for d in valid]


@pytest.fixture(scope="module", params=["gpt2", "cl100k"])
def trained(request, corpus, tmp_path_factory):
    train, _ = corpus
    tok = Tokenizer.train(train[:8] + SAMPLE, "bpe", vocab_size=1000, pattern=request.param)
    folder = tmp_path_factory.mktemp(request.param)
    tok.save(folder)
    return tok, hf.Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_ids_and_offsets_equal_huggingface(trained, corpus):
    ours, ref = trained
    texts = SAMPLE + [t[:3000] for t in corpus[1]]
    for text in texts:
        expected = ref.encode(text)
        got = ours.tokenize(text)
        assert got.ids == expected.ids, text[:40]
        assert got.offsets == expected.offsets, text[:40]
        assert ours.encode(text) == expected.ids


def test_decode_round_trips(trained):
    ours, ref = trained
    for text in SAMPLE:
        ids = ours.encode(text)
        assert ours.decode(ids) == text
        assert ref.decode(ids, skip_special_tokens=False) == text


def test_we_load_a_huggingface_trained_tokenizer(corpus, tmp_path):
    from tokenizers import decoders, models, pre_tokenizers, trainers

    ref = hf.Tokenizer(models.BPE())
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ref.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    ref.train_from_iterator(corpus[0][:4], trainer)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path)
    assert isinstance(ours, BPETokenizer) and ours.vocab_size == ref.get_vocab_size()
    for text in SAMPLE + [corpus[1][0][:3000]]:
        assert ours.encode(text) == ref.encode(text).ids, text[:40]


def test_tiktoken_export_gives_the_same_ids(trained, corpus):
    ours, _ = trained
    enc = ours.to_tiktoken()
    for text in SAMPLE + [t[:3000] for t in corpus[1]]:
        assert enc.encode(text, allowed_special="all") == ours.encode(text), text[:40]


def test_trained_compression_matches_huggingface(corpus):
    """Same corpus, same settings: held-out bytes per token within 1% of HF's trainer."""
    from tokenizers import models, pre_tokenizers, trainers

    train, valid = corpus
    train = train[:10]
    ours = Tokenizer.train(train, "bpe", vocab_size=1024)
    ref = hf.Tokenizer(models.BPE())
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    ref.train_from_iterator(train, trainer)
    held_out = "".join(valid)
    n_bytes = len(held_out.encode())
    ours_bpt = n_bytes / len(ours.encode(held_out))
    ref_bpt = n_bytes / len(ref.encode(held_out).ids)
    assert ours_bpt == pytest.approx(ref_bpt, rel=0.01)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_round_trips_and_offsets_slice_the_text(text):
    tok = _small()
    enc = tok.tokenize(text)
    assert tok.decode(enc.ids) == text
    for token_id, (start, end) in zip(enc.ids, enc.offsets, strict=True):
        # The offsets are the smallest span of characters whose bytes hold the token's bytes
        # (a token may hold part of a multi-byte character).
        piece = tok.token_bytes_of(token_id)
        assert piece in text[start:end].encode("utf-8")
        if end - start > 1:
            assert piece not in text[start + 1 : end].encode("utf-8")
            assert piece not in text[start : end - 1].encode("utf-8")


_SMALL = []


def _small():
    if not _SMALL:
        _SMALL.append(Tokenizer.train(SAMPLE * 3, "bpe", vocab_size=400))
    return _SMALL[0]


def test_truncation_and_padding_equal_huggingface(trained):
    ours, ref = trained
    text = SAMPLE[0] + SAMPLE[1]
    ref.enable_truncation(max_length=12, stride=3, strategy="longest_first")
    expected = ref.encode(text)
    got = ours.tokenize(text, max_length=12, stride=3, truncation="only_first")
    assert got.ids == expected.ids and got.offsets == expected.offsets
    assert [o.ids for o in got.overflowing] == [o.ids for o in expected.overflowing]
    ref.no_truncation()
    pad_id = ours.token_to_id("<|endoftext|>")
    ref.enable_padding(direction="left", pad_id=pad_id, pad_token="<|endoftext|>")
    batch = ["short", SAMPLE[0]]
    expected = ref.encode_batch(batch)
    got = ours.tokenize_batch(batch, padding_side="left")
    assert [e.ids for e in got] == [e.ids for e in expected]
    assert [e.attention_mask for e in got] == [e.attention_mask for e in expected]
    ref.no_padding()


def test_bad_input():
    with pytest.raises(LmforgeError, match="smaller than the 256 byte tokens"):
        Tokenizer.train(["abc"], "bpe", vocab_size=200)
    with pytest.raises(LmforgeError, match="empty"):
        Tokenizer.train(["", ""], "bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="unknown tokens"):
        BPETokenizer(_small().vocab, [("zz", "qq")], [])


# Lines of ASCII and of any Unicode, mixed: exercises the ASCII fast path and its cut points.
_LINES = st.lists(
    st.one_of(st.text(alphabet=string.printable, max_size=20), st.text(max_size=8)), max_size=6
).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), _LINES))
def test_any_unicode_encodes_as_huggingface_does(text):
    ours, ref = _small_with_reference()
    expected = ref.encode(text)
    got = ours.tokenize(text)
    assert ours.encode(text) == got.ids == expected.ids
    assert got.offsets == expected.offsets


_REF = []


def _small_with_reference():
    if not _REF:
        import tempfile

        folder = tempfile.mkdtemp()
        _small().save(folder)
        _REF.append((_small(), hf.Tokenizer.from_file(f"{folder}/tokenizer.json")))
    return _REF[0]
