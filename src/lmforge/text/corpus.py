"""User corpora: .txt files (one document each), .jsonl files (one document per line),
directories (searched recursively for both) and globs.

Text must be UTF-8. Invalid bytes stop the run with the file and byte offset, unless the user
asks for them to be replaced with U+FFFD.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError

SUFFIXES = (".txt", ".jsonl")


@dataclass
class Document:
    text: str
    source: str  # file path (with :line for jsonl) or play slug
    title: str = ""
    genre: str = ""


def _expand(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise LmforgeError(f"directory {spec} holds no .txt or .jsonl files")
        return files
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise LmforgeError(f"{spec}: unsupported file type; use .txt or .jsonl")
        return [path]
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        files = [p for p in files if p.suffix in SUFFIXES]
        if not files:
            raise LmforgeError(f"no .txt or .jsonl files match '{spec}'")
        return files
    raise LmforgeError(f"corpus file not found: {spec}")


def _decode(path: Path, data: bytes, invalid_utf8: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if invalid_utf8 == "replace":
            return data.decode("utf-8", errors="replace")
        raise LmforgeError(
            f"{path}: invalid UTF-8 at byte {e.start}; convert the file to UTF-8, or have the "
            "bad bytes replaced (--data.invalid_utf8=replace, or --invalid-utf8 replace)"
        ) from None


def _read_jsonl(path: Path, text: str, text_field: str, invalid_utf8: str) -> list[Document]:
    docs = []
    # split on \n only: JSON strings may hold U+2028 and friends, which splitlines() breaks on
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise LmforgeError(
                f"{path}:{lineno}: no '{text_field}' field (found: {fields}); name the field "
                "that holds the text (--data.text_field=NAME, or --text-field NAME)"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise LmforgeError(f"{path}:{lineno}: field '{text_field}' is not a string")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a JSON escape such as \ud800 names no character
            if invalid_utf8 != "replace":
                raise LmforgeError(
                    f"{path}:{lineno}: field '{text_field}' holds an unpaired surrogate at "
                    f"character {e.start}; fix the record or pass --data.invalid_utf8=replace"
                ) from None
            text = text.encode("utf-8", "replace").decode("utf-8")
        docs.append(Document(text=text, source=f"{path}:{lineno}"))
    return docs


def read_documents(
    specs: list[str], text_field: str = "text", invalid_utf8: str = "error"
) -> list[Document]:
    """Read every document named by `specs`; empty documents are dropped."""
    docs: list[Document] = []
    for spec in specs:
        for path in _expand(spec):
            text = _decode(path, path.read_bytes(), invalid_utf8).replace("\r\n", "\n")
            if path.suffix == ".jsonl":
                docs.extend(_read_jsonl(path, text, text_field, invalid_utf8))
            else:
                docs.append(Document(text=text, source=str(path), title=path.stem))
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise LmforgeError(f"the corpus {', '.join(specs)} holds no text; give non-empty files")
    return docs


def split_documents(
    docs: list[Document], valid_fraction: float
) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents (every k-th); a single document is split at a line near the end."""
    if len(docs) >= 2:
        every = max(2, round(1 / valid_fraction))
        valid = docs[every - 1 :: every] or docs[-1:]
        train = [d for d in docs if not any(d is v for v in valid)]
        return train, valid
    doc = docs[0]
    target = int(len(doc.text) * (1 - valid_fraction))
    line_end = doc.text.rfind("\n", 0, target) + 1
    cut = line_end if line_end > target * 0.9 else target  # prefer a line end close by
    head, tail = doc.text[:cut], doc.text[cut:]
    if not head.strip() or not tail.strip():
        raise LmforgeError(
            f"{doc.source} is too short to hold out {valid_fraction:.0%} for validation; "
            "give more text"
        )
    return [Document(head, doc.source, doc.title)], [Document(tail, doc.source, doc.title)]


# Built-in corpora by name: each loader gives its (train, valid) documents. The modules that
# provide them register here (lmforge.text registers 'shakespeare'), so this reader of files
# knows none of them.
NAMED_CORPORA: dict[str, Callable[[], tuple[list[Document], list[Document]]]] = {}


def register_corpus(name: str, loader: Callable[[], tuple[list[Document], list[Document]]]) -> None:
    """Make `name` a corpus spec (`--data.corpus=NAME`) that `loader` provides."""
    NAMED_CORPORA[name] = loader


def load_corpus(
    specs: list[str],
    text_field: str = "text",
    invalid_utf8: str = "error",
    valid_fraction: float = 0.1,
) -> tuple[list[Document], list[Document]]:
    """(train, valid) documents for a corpus spec: files, folders and globs, or the name of
    a built-in corpus ('shakespeare'), which comes with its own split."""
    named = [s for s in specs if s in NAMED_CORPORA]
    if named and len(specs) == 1:
        return NAMED_CORPORA[named[0]]()
    if named:
        raise LmforgeError(f"the built-in corpus '{named[0]}' cannot be mixed with files")
    return split_documents(read_documents(specs, text_field, invalid_utf8), valid_fraction)
