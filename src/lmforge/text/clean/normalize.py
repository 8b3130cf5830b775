"""Text normalization: Unicode form, line endings, control characters, whitespace, mojibake.

Mojibake repair is applied only where it is unambiguous: the text holds a sequence that is
the Latin-1/cp1252 reading of UTF-8 bytes (such as 'Ã©' for 'é'), and re-encoding the whole
text as cp1252 and decoding it as UTF-8 succeeds and shortens it. Anything else is left alone.
"""

from __future__ import annotations

import re
import unicodedata

from lmforge.errors import LmforgeError

# C0/C1 controls except tab and newline; zero-width and BOM characters
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_CONT = (
    "[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
# a UTF-8 lead byte then its continuation bytes, each read as cp1252 (or Latin-1 for the
# five bytes cp1252 leaves undefined)
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df]{_CONT}|[\u00e0-\u00ef]{_CONT}{{2}}|[\u00f0-\u00f4]{_CONT}{{3}}"
)


def _as_byte(ch: str) -> int:
    try:
        return ch.encode("cp1252")[0]
    except UnicodeEncodeError:
        return ord(ch)  # < 256 here: 0x81, 0x8d, 0x8f, 0x90, 0x9d


def _repair(match: re.Match) -> str:
    try:
        return bytes(_as_byte(c) for c in match.group()).decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def fix_mojibake(text: str) -> str:
    """Each run that decodes as UTF-8 once turned back into bytes is replaced by the
    character it spells; a run that does not decode is not mojibake and stays."""
    return _MOJIBAKE.sub(_repair, text)


def normalize(
    text: str, form: str = "NFC", mojibake: bool = True, collapse_whitespace: bool = True
) -> str:
    """One canonical spelling of `text`: `form` is NFC (keeps compatibility characters such
    as 'ﬁ') or NFKC (folds them), or none."""
    if form not in ("NFC", "NFKC", "none"):
        raise LmforgeError(f"unicode form '{form}' is not one of: NFC, NFKC, none")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    if mojibake:
        text = fix_mojibake(text)
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = _CONTROL.sub("", text)
    if collapse_whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip("\n")
    return text
