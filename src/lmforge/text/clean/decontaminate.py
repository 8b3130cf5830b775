"""Decontamination: drop training documents that share a long word n-gram (13 by default, as
GPT-3's appendix C) with an evaluation set. Only the evaluation n-grams' 64-bit hashes are
held."""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"\w+")


def ngram_hashes(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    out = set()
    for i in range(len(words) - n + 1):
        gram = " ".join(words[i : i + n]).encode("utf-8")
        out.add(int.from_bytes(hashlib.blake2b(gram, digest_size=8).digest(), "little"))
    return out


class Decontaminator:
    def __init__(self, eval_texts, n: int = 13, min_matches: int = 1):
        self.n, self.min_matches = n, min_matches
        self.grams: set[int] = set()
        for text in eval_texts:
            self.grams |= ngram_hashes(text, n)

    def matches(self, text: str) -> int:
        return len(ngram_hashes(text, self.n) & self.grams)

    def is_contaminated(self, text: str) -> bool:
        return bool(self.grams) and self.matches(text) >= self.min_matches
