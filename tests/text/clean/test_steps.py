"""Normalize, exact dedup, decontamination and language id on hand-made texts."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.text.clean.decontaminate import Decontaminator
from lmforge.text.clean.dedup import ExactDedup, SpanDedup
from lmforge.text.clean.language import identify
from lmforge.text.clean.normalize import fix_mojibake, normalize


def test_normalize_forms_controls_whitespace_and_line_endings():
    assert normalize("e\u0301t\u00e9") == "\u00e9t\u00e9"  # NFC composes
    assert normalize("\ufb01ne") == "\ufb01ne"  # NFC keeps the ligature
    assert normalize("\ufb01ne", "NFKC") == "fine"
    assert normalize("a\x00b\u200bc\ufeff") == "abc"
    assert normalize("a  \t b\u00a0c\r\nd\re\n\n\n\nf  ") == "a b c\nd\ne\n\nf"
    assert normalize("tab\tkept", collapse_whitespace=False) == "tab\tkept"
    with pytest.raises(LmforgeError, match="NFKD"):
        normalize("x", "NFKD")


def test_mojibake_repaired_only_where_unambiguous():
    assert fix_mojibake("caf\u00c3\u00a9") == "caf\u00e9"
    assert fix_mojibake("\u00e2\u20ac\u0153hi\u00e2\u20ac\u009d") == "\u201chi\u201d"
    assert fix_mojibake("\u00c2\u00b0C") == "\u00b0C"
    for fine in ("\u00c3 la carte", "na\u00efve caf\u00e9", "\u00c9cole \u00e0 Paris"):
        assert fix_mojibake(fine) == fine


def test_exact_dedup_by_normalized_text():
    d = ExactDedup()
    assert [d.is_duplicate(t) for t in ["Hello  World", "hello world\n", "Hello there"]] == [
        False,
        True,
        False,
    ]


def test_repeated_lines_and_paragraphs_removed_short_ones_kept():
    boiler = "Subscribe to our newsletter for the latest news and exclusive offers today"
    lines = SpanDedup("line", min_chars=40)
    assert lines(f"first page\n{boiler}\nHAMLET:\nHAMLET:") == (
        f"first page\n{boiler}\nHAMLET:\nHAMLET:",
        0,
    )
    assert lines(f"second page\n{boiler.upper()}\nmore") == ("second page\nmore", 1)
    paras = SpanDedup("paragraph", min_chars=10)
    paras("para one is here\n\npara two is here")
    assert paras("para two is here\n\nnew para") == ("new para", 1)


def test_decontamination_by_13_grams():
    eval_text = "to be or not to be that is the question whether tis nobler in the mind to suffer"
    dec = Decontaminator([eval_text], n=13)
    leaked = "Some prefix. " + " ".join(eval_text.split()[2:15]) + " and then more words."
    assert dec.is_contaminated(leaked)
    near = " ".join(eval_text.split()[2:14])  # only 12 words in common
    assert not dec.is_contaminated(near + " zebra")
    assert not Decontaminator([], 13).is_contaminated(leaked)
    assert not Decontaminator([eval_text], 13, min_matches=3).is_contaminated(leaked)


def test_language_identification():
    assert identify("The quick brown fox jumps over the lazy dog near the river bank.")[0] == "en"
    lang, p = identify("Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.")
    assert lang == "de" and 0.5 < p <= 1.0
    assert identify("El rápido zorro marrón salta sobre el perro perezoso.")[0] == "es"
