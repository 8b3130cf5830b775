"""Streaming reader for the cleaning pipeline: .txt files (one document each), .jsonl files
(one document a line, read a line at a time), folders, globs, and the built-in corpora. Memory
holds one document at a time; a line longer than `max_doc_bytes` is refused, not loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.text.corpus import NAMED_CORPORA, _expand

MAX_DOC_BYTES = 64 << 20


def _decode(raw: bytes, where: str, invalid_utf8: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if invalid_utf8 == "replace":
            return raw.decode("utf-8", errors="replace")
        raise LmforgeError(
            f"{where}: invalid UTF-8 at byte {e.start}; convert the file to UTF-8, or have the "
            "bad bytes replaced (--invalid-utf8 replace)"
        ) from None


def _too_big(where: str, limit: int) -> LmforgeError:
    return LmforgeError(
        f"{where}: a document over {limit / 2**20:g} MiB; split it, or raise the limit "
        "(--max-doc-mb)"
    )


def _jsonl(path: Path, text_field: str, invalid_utf8: str, limit: int) -> Iterator[dict]:
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise _too_big(where, limit)
            line = _decode(raw, where, invalid_utf8)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                msg = f"{where}: not valid JSON ({e.msg}); fix or remove the line"
                raise LmforgeError(msg) from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise LmforgeError(
                    f"{where}: no string field '{text_field}'; name the field that holds the "
                    "text (--text-field NAME)"
                )
            text = record[text_field]
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                if invalid_utf8 != "replace":
                    raise LmforgeError(
                        f"{where}: an unpaired surrogate at character {e.start}; fix the record "
                        "or pass --invalid-utf8 replace"
                    ) from None
                text = text.encode("utf-8", "replace").decode("utf-8")
            yield {"text": text, "source": where}


def iter_documents(
    specs: list[str],
    text_field: str = "text",
    invalid_utf8: str = "error",
    max_doc_bytes: int = MAX_DOC_BYTES,
) -> Iterator[dict]:
    """{'text', 'source'} for every document named by `specs`, in order."""
    for spec in specs:
        if spec in NAMED_CORPORA:
            train, _valid = NAMED_CORPORA[spec]()
            for doc in train:
                yield {"text": doc.text, "source": f"{spec}:{doc.source}"}
            continue
        for path in _expand(spec):
            if path.suffix == ".jsonl":
                yield from _jsonl(path, text_field, invalid_utf8, max_doc_bytes)
                continue
            if path.stat().st_size > max_doc_bytes:
                raise _too_big(str(path), max_doc_bytes)
            text = _decode(path.read_bytes(), str(path), invalid_utf8)
            yield {"text": text, "source": str(path)}
