"""Heuristic quality filters with their published thresholds.

Gopher (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher", appendix A.1.1 and table A1): quality rules and repetition rules, each of which drops
a whole document. C4 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2): line rules that drop lines and page rules that
drop the document. Each check returns the name of the rule that removed the document (or None),
so the report can count removals per rule.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
BULLETS = ("\u2022", "\u2023", "\u25e6", "\u2043", "\u2219", "-", "*", "\u00b7", "\u25aa")
_PUNCT_ONLY = re.compile(r"^[^\w]+$")


@dataclass
class GopherQuality:
    """Appendix A.1.1 of the Gopher paper."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # '#' and ellipses, each against the word count
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2

    def __call__(self, text: str) -> str | None:
        tokens = text.split()
        words = [w for w in tokens if not _PUNCT_ONLY.match(w)]
        n = len(words)
        if n < self.min_words:
            return "gopher_min_words"
        if n > self.max_words:
            return "gopher_max_words"
        mean = sum(map(len, words)) / n
        if mean < self.min_mean_word_length:
            return "gopher_min_mean_word_length"
        if mean > self.max_mean_word_length:
            return "gopher_max_mean_word_length"
        if text.count("#") / n > self.max_symbol_word_ratio:
            return "gopher_hash_ratio"
        if (text.count("...") + text.count("\u2026")) / n > self.max_symbol_word_ratio:
            return "gopher_ellipsis_ratio"
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if lines:
            if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > self.max_bullet_lines:
                return "gopher_bullet_lines"
            ellipsis = sum(ln.endswith(("...", "\u2026")) for ln in lines)
            if ellipsis / len(lines) > self.max_ellipsis_lines:
                return "gopher_ellipsis_lines"
        if sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens) < self.min_alpha_words:
            return "gopher_alpha_words"
        if sum(w.lower() in STOP_WORDS for w in words) < self.min_stop_words:
            return "gopher_stop_words"
        return None


def _dup_fractions(spans: list[str]) -> tuple[float, float]:
    """(share of spans that repeat an earlier one, share of characters in them)."""
    spans = [s for s in spans if s.strip()]
    if not spans:
        return 0.0, 0.0
    seen: set[str] = set()
    dup, dup_chars = 0, 0
    for s in spans:
        if s in seen:
            dup += 1
            dup_chars += len(s)
        else:
            seen.add(s)
    return dup / len(spans), dup_chars / sum(map(len, spans))


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of the most frequent n-gram times its count, over all word characters."""
    total = sum(map(len, words))
    if len(words) < n or not total:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / total


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of the words covered by an n-gram that occurred before, over all word
    characters (overlapping occurrences counted once)."""
    total = sum(map(len, words))
    if len(words) < n or not total:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            for k in range(i, i + n):
                covered[k] = True
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / total


@dataclass
class GopherRepetition:
    """Table A1 of the Gopher paper."""

    max_dup_line_fraction: float = 0.30
    max_dup_paragraph_fraction: float = 0.30
    max_dup_line_char_fraction: float = 0.20
    max_dup_paragraph_char_fraction: float = 0.20
    top_ngram: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngram: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )

    def __call__(self, text: str) -> str | None:
        paragraphs = re.split(r"\n{2,}", text.strip())
        frac, chars = _dup_fractions(paragraphs)
        if frac > self.max_dup_paragraph_fraction:
            return "gopher_dup_paragraphs"
        if chars > self.max_dup_paragraph_char_fraction:
            return "gopher_dup_paragraph_chars"
        frac, chars = _dup_fractions(text.split("\n"))
        if frac > self.max_dup_line_fraction:
            return "gopher_dup_lines"
        if chars > self.max_dup_line_char_fraction:
            return "gopher_dup_line_chars"
        words = text.lower().split()
        for n, limit in sorted(self.top_ngram.items()):
            if top_ngram_char_fraction(words, int(n)) > limit:
                return f"gopher_top_{n}gram"
        for n, limit in sorted(self.dup_ngram.items()):
            if duplicate_ngram_char_fraction(words, int(n)) > limit:
                return f"gopher_dup_{n}gram"
        return None


END_PUNCTUATION = (".", "?", "!", '"')
POLICY = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


@dataclass
class C4Filter:
    """C4's rules. Lines: keep those ending in terminal punctuation with at least 3 words, no
    word over 1000 characters, no 'javascript', no cookie/terms-of-use notice; citation
    markers are removed. Pages: drop those left with fewer than 5 sentences, those with
    'lorem ipsum', a curly bracket, or a word from `bad_words` (the paper's list is not
    shipped: give your own)."""

    min_words_per_line: int = 3
    min_sentences: int = 5
    max_word_length: int = 1000
    remove_citations: bool = True
    bad_words: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> tuple[str, str | None, Counter]:
        """(text with the failing lines removed, the page rule that dropped it or None, lines
        removed per line rule)."""
        lower = text.lower()
        removed: Counter = Counter()
        if "lorem ipsum" in lower:
            return text, "c4_lorem_ipsum", removed
        if "{" in text:
            return text, "c4_curly_bracket", removed
        if self.bad_words:
            words = set(re.findall(r"\w+", lower))
            if any(w.lower() in words for w in self.bad_words):
                return text, "c4_bad_words", removed
        kept = []
        for line in text.split("\n"):
            if self.remove_citations:
                line = _CITATION.sub("", line)
            stripped = line.strip()
            if not stripped:
                continue
            low = stripped.lower()
            tokens = stripped.split()
            if not stripped.endswith(END_PUNCTUATION):
                removed["c4_line_no_terminal_punctuation"] += 1
            elif len(tokens) < self.min_words_per_line:
                removed["c4_line_few_words"] += 1
            elif max(map(len, tokens)) > self.max_word_length:
                removed["c4_line_long_word"] += 1
            elif "javascript" in low:
                removed["c4_line_javascript"] += 1
            elif any(p in low for p in POLICY):
                removed["c4_line_policy"] += 1
            else:
                kept.append(stripped)
        out = "\n".join(kept)
        if len(_SENTENCE_END.findall(out)) < self.min_sentences:
            return out, "c4_min_sentences", removed
        return out, None, removed
