"""Gopher and C4 rules: a hand-made document on each side of each published threshold."""

from __future__ import annotations

import pytest

from lmforge.text.clean.filters import (
    C4Filter,
    GopherQuality,
    GopherRepetition,
    duplicate_ngram_char_fraction,
    top_ngram_char_fraction,
)

WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano", "candle", "forest"]


def prose(n: int, start: int = 0) -> str:
    """n distinct-looking words with stop words: passes every Gopher quality rule."""
    out = []
    for i in range(n):
        w = WORDS[(i + start) % 10] + str((i + start) // 10)
        out.append(w if i % 5 else ["the", "and", "of", "to", "with"][(i // 5) % 5])
    return " ".join(out)


Q = GopherQuality()


def test_prose_passes_every_rule():
    assert Q(prose(200)) is None and GopherRepetition()(prose(200)) is None


@pytest.mark.parametrize(
    "rule, ok, bad",
    [
        ("gopher_min_words", prose(50), prose(49)),
        ("gopher_max_words", prose(100_000), prose(100_001)),
        ("gopher_min_mean_word_length", "the and " + "abc " * 48, "the and " + "abc " * 47 + "ab"),
        ("gopher_max_mean_word_length", "abcdefghij " * 60, "abcdefghij " * 59 + "abcdefghijk"),
        ("gopher_hash_ratio", prose(100) + " #" * 10, prose(100) + " #" * 11),
        ("gopher_ellipsis_ratio", prose(100) + " ..." * 10, prose(100) + " ..." * 11),
    ],
)
def test_word_rules_at_their_thresholds(rule, ok, bad):
    assert Q(ok) != rule and Q(bad) == rule


def lines_doc(n_lines: int, n_special: int, special) -> str:
    return "\n".join(special(i) if i < n_special else prose(12, i * 12) for i in range(n_lines))


def test_line_rules_at_their_thresholds():
    bullet = lambda i: "- " + prose(12, i * 12)  # noqa: E731
    assert Q(lines_doc(10, 9, bullet)) is None  # 90% bullets: not more than 90%
    assert Q(lines_doc(10, 10, bullet)) == "gopher_bullet_lines"
    dots = lambda i: prose(12, i * 12) + "..."  # noqa: E731
    assert Q(lines_doc(10, 3, dots)) is None
    assert Q(lines_doc(10, 4, dots)) == "gopher_ellipsis_lines"


def test_alpha_and_stop_word_rules():
    assert Q(prose(80) + " 1" * 20) is None  # 80 of 100 words alphabetic
    assert Q(prose(80) + " 1" * 21) == "gopher_alpha_words"
    no_stop = " ".join(WORDS[i % 10] + str(i) for i in range(60))
    assert Q(no_stop + " the and") is None
    assert Q(no_stop + " the") == "gopher_stop_words"


R = GopherRepetition()


def test_duplicate_line_and_paragraph_rules():
    # 10 lines, 3 repeats (30%): kept; 4 repeats: dropped. Short lines keep char share low.
    uniq = [f"line {i} {WORDS[i]}" for i in range(10)]
    three = "\n".join(uniq[:6] + ["x"] * 4)  # the first 'x' is no repeat
    assert R(three) is None
    four = "\n".join(uniq[:5] + ["x"] * 5)
    assert R(four) == "gopher_dup_lines"
    paras = [prose(30, i * 30) for i in range(10)]
    assert R("\n\n".join(paras[:7] + paras[:3])) == "gopher_dup_paragraph_chars"  # 30% of chars
    assert R("\n\n".join(paras[:6] + paras[:4])) == "gopher_dup_paragraphs"  # 40% of paragraphs
    assert R("\n\n".join(paras[:9] + ["ok"])) is None


def test_ngram_fractions_and_rules():
    words = ["a", "b", "a", "b", "c"]
    assert top_ngram_char_fraction(words, 2) == pytest.approx(4 / 5)
    assert duplicate_ngram_char_fraction(["x", "y", "z", "x", "y", "z"], 3) == pytest.approx(3 / 6)
    base = prose(400).split()
    # top 2-gram: 'zz qq' repeated k times against ~2.5k characters of prose
    total = sum(map(len, base))
    k_ok = int(0.19 * total / 4)
    ok = " ".join(base) + " zz qq" * k_ok
    assert R(ok) != "gopher_top_2gram"
    bad = " ".join(base) + " zz qq" * (k_ok * 2)
    assert R(bad) == "gopher_top_2gram"
    # a copied 10-word passage: dup 10-gram share just under and over 10%
    assert R(" ".join(base[:360] + base[:30])) is None
    assert R(" ".join(base[:360] + base[:60])).startswith("gopher_dup_")


C4 = C4Filter()
SENT = "This is a complete sentence with enough words."


def test_c4_line_rules_tag_each_removed_line():
    text = "\n".join(
        [SENT] * 5
        + ["No terminal punctuation here", "Two words.", "Please enable Javascript in it.",
           "Read our privacy policy now.", "Cite this [1] claim properly.", "x" * 1001 + " a b."]
    )  # fmt: skip
    out, rule, removed = C4(text)
    assert rule is None
    assert removed == {
        "c4_line_no_terminal_punctuation": 1,
        "c4_line_few_words": 1,
        "c4_line_javascript": 1,
        "c4_line_policy": 1,
        "c4_line_long_word": 1,
    }
    assert "Cite this  claim properly." in out and "[1]" not in out


def test_c4_page_rules():
    assert C4("\n".join([SENT] * 5))[1] is None
    assert C4("\n".join([SENT] * 4))[1] == "c4_min_sentences"
    assert C4("\n".join([SENT] * 5 + ["Lorem ipsum dolor sit amet."]))[1] == "c4_lorem_ipsum"
    assert C4("\n".join([SENT] * 5 + ["function() { return 1; }."]))[1] == "c4_curly_bracket"
    assert C4Filter(bad_words=["enough"])("\n".join([SENT] * 5))[1] == "c4_bad_words"
    assert C4Filter(bad_words=["enou"])("\n".join([SENT] * 5))[1] is None
