"""Unigram (SentencePiece) tokenizer against independent references: Hugging Face
`tokenizers` reading our file, `sentencepiece` encoding with the same model and training on
the same text, and brute-force enumeration of every segmentation."""

import io
import itertools
import math
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizers as hf
from lmforge.errors import LmforgeError
from lmforge.text import load_shakespeare
from lmforge.tokenizers import EOT, Tokenizer, unigram
from lmforge.tokenizers.unigram import (
    SPACE,
    UnigramTokenizer,
    _Lattices,
    _words,
)

SAMPLE = [
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n[Exit]",
    "unknown characters: Ωψ∑ and ΩΩ, x~y",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "whitespace   runs\t\t\tand\r\n\r\nline ends   \n",
    "  leading spaces",
    " ",
    "   ",
    "",
    f"a{SPACE}b and {SPACE}start",
    f"{SPACE}x",
    "special <|endoftext|> inside and <|endoftext|>",
    "<|endoftext|>at the start, then <|endoftext|> <|endoftext|>b",
    "specials <unk> too",
]


def lines(docs):
    return [line for doc in docs for line in doc.text.split("\n") if line]


@pytest.fixture(scope="module")
def shakespeare():
    return load_shakespeare()


@pytest.fixture(scope="module")
def trained(shakespeare, tmp_path_factory):
    train, _ = shakespeare
    tok = Tokenizer.train([d.text for d in train[:2]], "unigram", vocab_size=800)
    folder = tmp_path_factory.mktemp("unigram")
    tok.save(folder)
    return tok, hf.Tokenizer.from_file(str(folder / "tokenizer.json"))


def small_tokenizer(scores: dict[str, float]) -> UnigramTokenizer:
    return UnigramTokenizer([("<unk>", 0.0), *scores.items()], unk_id=0, specials=[])


# -- Hugging Face reads what we write


def test_ids_and_offsets_equal_huggingface(trained, shakespeare):
    ours, ref = trained
    held_out = shakespeare[1][0].text
    texts = SAMPLE + lines(shakespeare[1][:1])[:300] + [held_out[:5000]]
    for text in texts:
        expected = ref.encode(text)
        got = ours.tokenize(text)
        assert got.ids == expected.ids, text[:40]
        assert got.offsets == expected.offsets, text[:40]
        assert ours.encode(text) == expected.ids
    assert ref.get_vocab_size() == ours.vocab_size


def test_batch_encoding_equals_huggingface(trained, shakespeare, tmp_path):
    ours, ref = trained
    ours.save(tmp_path)
    texts = SAMPLE + lines(shakespeare[1][:1])[:2000]
    plain = [t for t in texts if EOT not in t]
    for batch in [plain, texts]:  # without special tokens: one numpy pass; with them: per text
        fresh = Tokenizer.load(tmp_path)  # nothing cached
        assert fresh.encode_batch(batch) == [e.ids for e in ref.encode_batch(batch)]


def test_cache_shared_by_encode_and_batch(trained, shakespeare, tmp_path):
    """Words repeated within a batch and across calls, texts that start with a space or a
    '▁', empty ones: whatever the cache holds, ids stay those of Hugging Face."""
    ours, ref = trained
    ours.save(tmp_path)
    texts = [t for t in SAMPLE if EOT not in t and "<unk>" not in t]
    texts += lines(shakespeare[1][:1])[:300] + ["", " ", "a a a", f"{SPACE}a a", " a  a "]
    expected = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    fresh = Tokenizer.load(tmp_path)
    assert [fresh.encode(t) for t in texts[:50]] == expected[:50]  # some words cached
    assert fresh.encode_batch(texts) == expected  # then the rest, in numpy
    assert fresh.encode_batch(texts[::-1]) == expected[::-1]  # all cached
    assert [fresh.encode(t) for t in texts] == expected


@pytest.mark.parametrize(
    "setting",
    [
        {"CACHE_SIZE": 500},  # the cache starts over in the middle of the texts
        {"DENSE_TRIE": 0},  # transitions as sorted keys, for large alphabets
        {"SCORE_TABLE": 3_000},  # the words segmented in many chunks
    ],
)
def test_batch_encoding_limits(trained, shakespeare, tmp_path, monkeypatch, setting):
    ours, ref = trained
    ours.save(tmp_path)
    for name, value in setting.items():
        monkeypatch.setattr(unigram, name, value)
    texts = lines(shakespeare[1][:1])[:1500] + ["日本語 😀", f"x{SPACE * 3}y", "Ωψ ΩaΩ"]
    expected = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    fresh = Tokenizer.load(tmp_path)
    for lo in range(0, len(texts), 400):  # later batches meet a filled cache
        assert fresh.encode_batch(texts[lo : lo + 400]) == expected[lo : lo + 400]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=f"ab cd\n\t{SPACE}Ω日😀", max_size=20))
def test_any_text_encodes_like_huggingface(trained, text):
    ours, ref = trained
    expected = ref.encode(text)
    got = ours.tokenize(text)
    assert (got.ids, got.offsets) == (expected.ids, expected.offsets)


def test_ties_broken_like_huggingface(tmp_path):
    # Scores that add up exactly, so several segmentations tie for the best.
    tok = small_tokenizer({SPACE: -1.0, "a": -1.0, "b": -1.0, "ab": -2.0, "ba": -2.0, "aba": -3.0})
    tok.save(tmp_path)
    ref = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in ["ab", "aba", "abab", "babab", "ab ba", "aabba b"]:
        assert tok.encode(text) == ref.encode(text).ids, text


def test_decode_like_huggingface(trained):
    ours, ref = trained
    for text in SAMPLE:
        ids = ours.encode(text)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids)
    text = "But soft, what light through yonder window breaks?"
    assert ours.decode(ours.encode(text)) == text


def test_unknown_runs_become_one_token(trained):
    ours, _ = trained
    assert ours.encode("ΩΩΩ") == [ours.token_to_id(SPACE), ours.unk_id]
    enc = ours.tokenize("aΩΩb")
    assert enc.ids.count(ours.unk_id) == 1
    assert enc.offsets[enc.ids.index(ours.unk_id)] == (1, 3)


def test_we_read_a_file_huggingface_trained(shakespeare, tmp_path):
    """The other direction: a Unigram tokenizer trained and written by Hugging Face."""
    model = hf.models.Unigram()
    ref = hf.Tokenizer(model)
    ref.pre_tokenizer = hf.pre_tokenizers.Metaspace(prepend_scheme="always")
    ref.decoder = hf.decoders.Metaspace(prepend_scheme="always")
    trainer = hf.trainers.UnigramTrainer(
        vocab_size=600, special_tokens=["<pad>", "<unk>"], unk_token="<unk>"
    )
    ref.train_from_iterator(lines(shakespeare[0][:1]), trainer)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path)
    assert isinstance(ours, UnigramTokenizer) and ours.unk_id == 1
    for text in SAMPLE[:10] + lines(shakespeare[1][:1])[:200]:
        expected = ref.encode(text)
        assert ours.tokenize(text).ids == expected.ids, text
        assert ours.tokenize(text).offsets == expected.offsets, text


def test_sentencepiece_encodes_the_same_with_our_model(shakespeare):
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines(shakespeare[0][:1])),
        model_writer=model,
        model_type="unigram",
        vocab_size=500,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    ours = UnigramTokenizer(vocab, unk_id=sp.unk_id(), specials=[])
    texts = lines(shakespeare[1][:1])[:300] + ["unknown Ωψ here", "a  b", "x😀😀y"]
    for text in texts:
        assert ours.encode(text) == sp.encode(text), text


# -- the model: Viterbi and sampling against brute force

SCORES = {
    SPACE: -2.5,
    "a": -2.0,
    "b": -2.2,
    "c": -2.9,
    "ab": -3.1,
    "bc": -3.3,
    "abc": -5.9,
    f"{SPACE}a": -2.7,
    f"{SPACE}ab": -4.4,
    "ca": -3.0,
    "cab": -4.2,
}


def segmentations(word, scores, unk_score):
    """Every way to cut `word` into pieces (a character missing from `scores` is <unk>),
    with its total score."""
    for cuts in itertools.product([False, True], repeat=len(word) - 1):
        parts, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                parts.append(word[start:i])
                start = i
        parts.append(word[start:])
        total = 0.0
        for part in parts:
            if part in scores:
                total += scores[part]
            elif len(part) == 1:
                total += unk_score
            else:
                break
        else:
            yield parts, total


def single_word(tok, word):
    """The one-word Python segmentation as (ids, token ends)."""
    path = tok._best_path(word)
    return [id for _, _, id in path], [end for _, end, _ in path]


def piece_scores(tok, word, batch):
    """Our segmentation of one pre-token as pieces (an <unk> run as its characters), by the
    one-word Python path or the many-word numpy path (ids only: its one <unk> run, if any,
    covers what the other pieces leave)."""
    if batch:
        ids = tok._best_paths(["▁x", word, "▁xyz"])[1]  # neighbours must not leak in
        assert ids.count(tok.unk_id) <= 1
        known = sum(len(tok.id_to_token(id)) for id in ids if id != tok.unk_id)
        ends = list(
            itertools.accumulate(
                len(word) - known if id == tok.unk_id else len(tok.id_to_token(id)) for id in ids
            )
        )
    else:
        ids, ends = single_word(tok, word)
    parts = []
    for start, end, id in zip([0, *ends], ends, ids):
        if id == tok.unk_id:
            parts.extend(word[start:end])
        else:
            parts.append(tok.id_to_token(id))
    return parts


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_viterbi_finds_the_best_segmentation(seed, batch):
    rng = np.random.default_rng(seed)
    scores = {p: float(-rng.uniform(1, 8)) for p in SCORES}
    tok = small_tokenizer(scores)
    unk_score = min([0.0, *scores.values()]) - 10
    for word in [f"{SPACE}abcabc", f"{SPACE}cabxab", f"{SPACE}bcabcab", "abcxxcab", f"{SPACE}"]:
        best_parts, best = max(segmentations(word, scores, unk_score), key=lambda ps: ps[1])
        ours = piece_scores(tok, word, batch)
        assert "".join(ours) == word
        total = sum(scores.get(p, unk_score) for p in ours)
        assert total == pytest.approx(best), (word, ours, best_parts)


def test_batch_and_single_word_segmentation_agree(trained, shakespeare):
    """Both Viterbi paths, ties included (equal scores make many): the same pieces."""
    ours, _ = trained
    words = list(dict.fromkeys(w for t in lines(shakespeare[1][:2])[:400] for w in _words(t)))
    words += [f"{SPACE}Ωψ東京", f"{SPACE}x\u0301y", f"{SPACE}{'ab' * 40}"]
    assert ours._best_paths(words) == [tuple(single_word(ours, w)[0]) for w in words]
    tied = small_tokenizer(dict.fromkeys(SCORES, -2.0))
    tie_words = [f"{SPACE}abcabc", f"{SPACE}cabxab", f"{SPACE}bcabcab", "abcxxcab"] * 2
    assert tied._best_paths(tie_words) == [tuple(single_word(tied, w)[0]) for w in tie_words]


def test_sampling_draws_each_segmentation_with_its_probability():
    tok = small_tokenizer(SCORES)
    alpha = 0.5
    segs = list(segmentations(f"{SPACE}abcab", SCORES, -100.0))
    weights = np.exp([alpha * total for _, total in segs])
    expected = {tuple(p): w / weights.sum() for (p, _), w in zip(segs, weights)}
    draws = Counter(
        tuple(tok.id_to_token(i) for i in tok.sample("abcab", alpha, seed=s)) for s in range(4000)
    )
    assert set(draws) <= set(expected)
    for parts, p in expected.items():
        assert draws[parts] / 4000 == pytest.approx(p, abs=0.03), parts


def test_sampling_reproducible_and_concatenates_back(trained):
    ours, _ = trained
    text = "But soft, what light through yonder window breaks? It is the east"
    first = ours.sample(text, alpha=0.1, seed=7)
    assert first == ours.sample(text, alpha=0.1, seed=7)
    draws = [ours.sample(text, alpha=0.1, seed=s) for s in range(20)]
    assert len({tuple(d) for d in draws}) > 10
    for ids in draws:
        assert ours.decode(ids) == text
    with_specials = ours.sample(f"a{EOT}b Ωψ", alpha=0.2, seed=1)
    assert ours.eot_id in with_specials and ours.unk_id in with_specials


def test_sampling_approaches_viterbi_as_alpha_grows(trained, shakespeare):
    ours, _ = trained
    texts = lines(shakespeare[1][:1])[:100]
    agree = []
    for alpha in [0.1, 1.0, 100.0]:
        same = [ours.sample(t, alpha, seed=i) == ours.encode(t) for i, t in enumerate(texts)]
        agree.append(sum(same) / len(same))
    assert agree[0] < agree[1] < agree[2]
    assert agree[2] >= 0.97
    with pytest.raises(LmforgeError, match="alpha"):
        ours.sample("x", alpha=0)


# -- training internals against brute force


def test_expected_and_viterbi_counts_equal_enumeration():
    # b + cab and bc + ab tie in SCORES; nudged apart, the best path is unique.
    scores = {p: s - 1e-3 * i for i, (p, s) in enumerate(SCORES.items())}
    words = {f"{SPACE}abcab": 3, f"{SPACE}ca": 2, "bcab": 1, f"{SPACE}": 5}
    full, index = _Lattices.of_words(list(words), max_len=16)
    keep = np.zeros(len(index), dtype=bool)
    keep[[index[p] for p in scores]] = True
    lattices = full.restrict(keep)  # numbers the kept pieces in substring-id order
    pieces = [p for p, i in sorted(index.items(), key=lambda pi: pi[1]) if keep[i]]
    logp = np.array([scores[p] for p in pieces])
    counts = np.array(list(words.values()), dtype=np.float64)
    brute = Counter()
    brute_viterbi = Counter()
    for word, count in words.items():
        segs = list(segmentations(word, scores, -math.inf))
        z = sum(math.exp(total) for _, total in segs)
        for parts, total in segs:
            for part in parts:
                brute[part] += count * math.exp(total) / z
        for part in max(segs, key=lambda ps: ps[1])[0]:
            brute_viterbi[part] += count
    expected = lattices.expected_counts(logp, counts)
    np.testing.assert_allclose(expected, [brute[p] for p in pieces], rtol=1e-9)
    viterbi = lattices.viterbi_counts(logp, counts)
    np.testing.assert_array_equal(viterbi, [brute_viterbi[p] for p in pieces])


# -- vocabulary, files, errors


def test_special_tokens_and_configurable_unk(tmp_path):
    text = ["the cat sat on the mat", "the dog sat"]
    tok = Tokenizer.train(text, "unigram", 40, special_tokens=["<s>", "</s>", "<unk>"])
    assert (tok.token_to_id("<s>"), tok.token_to_id("</s>"), tok.unk_id) == (0, 1, 2)
    assert tok.special_tokens == ["<s>", "</s>", "<unk>"]
    tok.save(tmp_path)
    ref = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    expected = [tok.token_to_id(f"{SPACE}the"), tok.token_to_id(SPACE), 2, 1]
    assert ref.encode("the Ω</s>").ids == tok.encode("the Ω</s>") == expected
    default = Tokenizer.train(text, "unigram", 40)
    assert (default.unk_id, default.eot_id) == (0, 1)


def test_save_load(trained, tmp_path):
    ours, _ = trained
    ours.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert isinstance(loaded, UnigramTokenizer)
    assert loaded.vocab == ours.vocab and loaded.special_tokens == ours.special_tokens
    for text in SAMPLE:
        assert loaded.tokenize(text).offsets == ours.tokenize(text).offsets


def test_token_bytes(trained):
    ours, _ = trained
    sizes = ours.token_bytes()
    assert sizes[ours.eot_id] == 0 and sizes[ours.unk_id] == 1
    text = "Now, fair Hippolyta, our nuptial hour"
    # each '▁' counts as a space, so the one put in front adds a byte
    assert sum(sizes[i] for i in ours.encode(text)) == len(text.encode("utf-8")) + 1


def test_training_errors():
    with pytest.raises(LmforgeError, match="empty"):
        Tokenizer.train([], "unigram", 100)
    with pytest.raises(LmforgeError, match="empty"):
        Tokenizer.train(["", "<|endoftext|>"], "unigram", 100)
    with pytest.raises(LmforgeError, match="vocab_size >= 12"):
        Tokenizer.train(["abc def ghi"], "unigram", 11)  # 10 characters + <unk>, <|endoftext|>
    tok = Tokenizer.train(["abc def ghi"], "unigram", 12)
    assert tok.vocab_size == 12


def test_small_corpus_gives_a_smaller_vocabulary():
    tok = Tokenizer.train(["ab ab ab"], "unigram", 1000)
    assert tok.vocab_size < 1000
    assert tok.decode(tok.encode("ab ab")) == "ab ab"


def test_unsupported_files(trained):
    ours, _ = trained
    spec = ours.to_spec()
    for change, message in [
        ({"normalizer": {"type": "NFKC"}}, "normalizer"),
        ({"pre_tokenizer": {"type": "Whitespace"}}, "Metaspace"),
        ({"model": {**spec["model"], "byte_fallback": True}}, "byte_fallback"),
        ({"model": {**spec["model"], "unk_id": None}}, "unk_id"),
    ]:
        with pytest.raises(LmforgeError, match=message):
            UnigramTokenizer._from_spec({**spec, **change})
    assert not UnigramTokenizer._recognises({"model": {"type": "BPE"}})


# -- training quality against sentencepiece


@pytest.mark.slow
def test_compression_matches_sentencepiece(shakespeare):
    """Both trained on the training plays' lines at 8192; bytes per token on held-out plays."""
    spm = pytest.importorskip("sentencepiece")
    train, held_out = lines(shakespeare[0]), lines(shakespeare[1])
    started = time.perf_counter()
    ours = Tokenizer.train(train, "unigram", 8192, special_tokens=[])
    our_seconds = time.perf_counter() - started
    model = io.BytesIO()
    started = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train),
        model_writer=model,
        model_type="unigram",
        vocab_size=8192,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        bos_id=-1,  # one special token, <unk>, as ours
        eos_id=-1,
        split_by_unicode_script=False,  # ours lets a piece mix letters and punctuation
        split_by_number=False,
        num_threads=1,
        minloglevel=2,
    )
    spm_seconds = time.perf_counter() - started
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n_bytes = sum(len(line.encode("utf-8")) for line in held_out)
    ours_bpt = n_bytes / sum(len(ours.encode(line)) for line in held_out)
    spm_bpt = n_bytes / sum(len(ids) for ids in sp.encode(held_out))
    print(
        f"\nheld-out bytes/token: lmforge {ours_bpt:.4f} ({our_seconds:.1f} s), "
        f"sentencepiece {spm_bpt:.4f} ({spm_seconds:.1f} s)"
    )
    assert ours.vocab_size == sp.get_piece_size() == 8192
    assert ours_bpt >= 0.99 * spm_bpt
