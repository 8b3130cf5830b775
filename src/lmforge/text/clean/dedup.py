"""Exact deduplication: whole documents, and lines or paragraphs repeated across documents,
by a 64-bit hash of their normalized text (lower-cased, whitespace collapsed). Only hashes are
held: 8 bytes of payload per distinct document or line."""

from __future__ import annotations

import hashlib

from lmforge.errors import LmforgeError


def text_key(text: str) -> int:
    canon = " ".join(text.lower().split())
    return int.from_bytes(hashlib.blake2b(canon.encode("utf-8"), digest_size=8).digest(), "big")


class ExactDedup:
    """Keeps the first document of each normalized text."""

    def __init__(self):
        self.seen: set[int] = set()

    def is_duplicate(self, text: str) -> bool:
        key = text_key(text)
        if key in self.seen:
            return True
        self.seen.add(key)
        return False


class SpanDedup:
    """Drops lines (unit 'line') or paragraphs (unit 'paragraph', blank-line separated)
    already seen in an earlier document or earlier in this one, keeping the first. Spans
    shorter than `min_chars` are kept always: short lines ('Exit.', 'HAMLET:') repeat in
    good text."""

    def __init__(self, unit: str = "line", min_chars: int = 64):
        if unit not in ("line", "paragraph"):
            raise LmforgeError(f"dedup unit '{unit}' is not one of: line, paragraph")
        self.sep = "\n" if unit == "line" else "\n\n"
        self.min_chars = min_chars
        self.seen: set[int] = set()

    def __call__(self, text: str) -> tuple[str, int]:
        """(text without the repeated spans, how many were removed)."""
        kept, removed = [], 0
        for span in text.split(self.sep):
            if len(span.strip()) >= self.min_chars:
                key = text_key(span)
                if key in self.seen:
                    removed += 1
                    continue
                self.seen.add(key)
            kept.append(span)
        return self.sep.join(kept), removed
