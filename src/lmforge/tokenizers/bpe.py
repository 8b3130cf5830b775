"""Byte-level BPE, as in GPT-2 and GPT-4 (Sennrich et al. 2016; Radford et al. 2019).

Pipeline: a regex cuts the text into pre-tokens (words, numbers, punctuation runs, whitespace);
each pre-token becomes its UTF-8 bytes, one base token per byte, so any string is encodable
and `decode(encode(s)) == s`; learned merges, applied lowest rank first, join adjacent tokens.

Training counts the pre-tokens once and works on the unique ones with their counts: the most
frequent adjacent pair becomes the next merge, and only the words containing that pair are
touched, with pair counts updated incrementally and a lazy max-heap to find the next best.

On disk it is a Hugging Face tokenizer.json (BPE model, ByteLevel pre-tokenizer/decoder),
and it exports to tiktoken's mergeable ranks.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import cache
from itertools import chain

import regex

from lmforge.errors import LmforgeError
from lmforge.tokenizers.base import Offset, TableVocab, Tokenizer

# GPT-2's pre-tokenizer, and the cl100k (GPT-4) one, which caps digit runs at 3 and keeps
# a leading non-letter with a word. Both are written without possessive quantifiers so the
# Oniguruma engine of Hugging Face `tokenizers` reads them the same way.
PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "cl100k": (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
        r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
}


def _ascii_version(pattern: str) -> re.Pattern:
    """The pattern for pure-ASCII text, where \\p{L} is A-Za-z, \\p{N} is 0-9 and \\s is ASCII
    whitespace; the standard library's `re` runs it about twice as fast as `regex`."""
    ascii_class = {r"\p{L}": "A-Za-z", r"\p{N}": "0-9"}

    def translate(m: re.Match) -> str:
        item = m.group()
        if item.startswith("["):  # inside a class: splice the ranges in
            for prop, ranges in ascii_class.items():
                item = item.replace(prop, ranges)
            return item
        return f"[{ascii_class[item]}]"

    return re.compile(re.sub(r"\[[^\]]*\]|\\p\{[LN]\}", translate, pattern), re.ASCII)


_ASCII_PATTERNS = {p: _ascii_version(p) for p in PATTERNS.values()}
# No pre-token of either pattern runs from a newline into a following non-space character,
# and a lone newline between two non-space characters is a pre-token whatever follows it
# (the `\s+(?!\S)` look-ahead only splits longer whitespace runs), so text cut there scans
# piece by piece to the same result.
_LINE_START = re.compile(r"(?<=\S\n)(?=\S)")


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, so every token is a string
    without whitespace or control characters (which would break vocab files)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _as_unicode(data: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


def _train_merges(
    word_counts: dict[bytes, int], n_merges: int
) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """The BPE merges (pairs of token ids; bytes are ids 0..255, merge k makes id 256+k),
    and each word's final segmentation, which is exactly how encoding will split it."""
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (word, count) in enumerate(zip(words, counts, strict=True)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += count
            where[pair].add(i)
    # Ties go to the smaller pair, as in Hugging Face's trainer.
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:  # stale entry: the count changed since
            if pair_counts.get(pair, 0) > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
            continue
        if -neg < 1:
            break
        new_id = 256 + len(merges)
        merges.append(pair)
        a, b = pair
        changed: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop(pair, ()):
            word = words[i]
            n = len(word)
            j, out = 0, []
            while j < n:
                if word[j] == a and j + 1 < n and word[j + 1] == b:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            if len(out) == n:  # stale index entry: an earlier merge removed the pair here
                continue
            count = counts[i]
            for p in zip(word, word[1:]):
                changed[p] -= count
            for p in zip(out, out[1:]):
                changed[p] += count
                if new_id in p:  # pairs without the new token are indexed already
                    where[p].add(i)
            words[i] = out
        pair_counts.pop(pair, None)
        for p, delta in changed.items():
            if p == pair or delta == 0:
                continue
            pair_counts[p] += delta
            if pair_counts[p] <= 0:
                pair_counts.pop(p)
            elif delta > 0:  # a lower count is caught when its stale entry is popped
                heapq.heappush(heap, (-pair_counts[p], p))
    return merges, words


class BPETokenizer(TableVocab, Tokenizer):
    algorithm = "bpe"

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        specials: list[str],
        pattern: str = PATTERNS["gpt2"],
    ):
        self.vocab = vocab
        self.inverse = {i: t for t, i in vocab.items()}
        self.merges = merges
        self.specials = specials
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        self._ascii = _ASCII_PATTERNS.get(pattern)
        table = byte_to_unicode()
        missing = [b for b in range(256) if table[b] not in vocab]
        if missing:
            raise LmforgeError(f"BPE vocabulary lacks {len(missing)} of the 256 byte tokens")
        self._byte_ids = [vocab[table[b]] for b in range(256)]
        self._unicode_to_byte = {c: b for b, c in table.items()}
        self._ranks = {}
        for rank, (left, right) in enumerate(merges):
            if left not in vocab or right not in vocab or left + right not in vocab:
                raise LmforgeError(f"BPE merge {left!r} {right!r} refers to unknown tokens")
            self._ranks[(vocab[left], vocab[right])] = (rank, vocab[left + right])
        self._cache: dict[str, list[int]] = {}
        self._special_ids = {vocab[s] for s in specials if s in vocab}

    # -- training

    @classmethod
    def _train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None,
        specials: list[str],
        pattern: str = "gpt2",
    ) -> BPETokenizer:
        pat = PATTERNS.get(pattern, pattern)
        vocab_size = vocab_size or 8192
        if vocab_size < 256 + len(specials):
            raise LmforgeError(
                f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus "
                f"{len(specials)} special tokens; use at least {256 + len(specials)}"
            )
        scanner = cls({_as_unicode(bytes([b])): b for b in range(256)}, [], [], pat)
        words: Counter[str] = Counter()
        for text in texts:
            words.update(scanner._words(text))
        if not words:
            raise LmforgeError("the corpus is empty: nothing to train the tokenizer on")
        word_counts = {w.encode("utf-8"): c for w, c in words.items()}
        merges, segmented = _train_merges(word_counts, vocab_size - 256 - len(specials))
        table = byte_to_unicode()
        tokens = [table[b] for b in range(256)]
        merge_strings = []
        for a, b in merges:
            merge_strings.append((tokens[a], tokens[b]))
            tokens.append(tokens[a] + tokens[b])
        vocab = {t: i for i, t in enumerate(tokens)}
        for s in specials:
            vocab.setdefault(s, len(vocab))
        tokenizer = cls(vocab, merge_strings, specials, pat)
        # Training already split every training word: encoding the corpus starts warm.
        tokenizer._cache.update(zip(words, segmented))
        return tokenizer

    # -- encoding

    def _bpe(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in word.encode("utf-8")]
        ranks = self._ranks
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:]):
                found = ranks.get(pair)
                if found is not None and (best is None or found[0] < best[0]):
                    best, best_pair = found, pair
            if best is None:
                break
            new_id, (a, b) = best[1], best_pair
            out, j = [], 0
            while j < len(ids):
                if j + 1 < len(ids) and ids[j] == a and ids[j + 1] == b:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(ids[j])
                    j += 1
            ids = out
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def _pieces(self, text: str) -> list[tuple[int, str]]:
        """(start, text) pieces to scan, each pure ASCII where possible (see _LINE_START)."""
        if self._ascii is None or text.isascii():
            return [(0, text)]
        pieces, start = [], 0
        for piece in _LINE_START.split(text):
            pieces.append((start, piece))
            start += len(piece)
        return pieces

    def _scanner(self, piece: str) -> re.Pattern | regex.Pattern:
        return self._ascii if self._ascii is not None and piece.isascii() else self._regex

    def _encode_ordinary(self, text: str) -> list[int]:
        # The hot path: most words are cached, so this is a regex scan and dict look-ups.
        get, bpe = self._cache.get, self._bpe
        return list(chain.from_iterable([get(w) or bpe(w) for w in self._words(text)]))

    def _words(self, text: str) -> list[str]:
        """The pre-tokens of `text`."""
        if self._ascii is not None and text.isascii():
            return self._ascii.findall(text)
        return [w for _, p in self._pieces(text) for w in self._scanner(p).findall(p)]

    def _encode_ordinary_offsets(self, text: str) -> tuple[list[int], list[Offset]]:
        ids: list[int] = []
        offsets: list[Offset] = []
        matches = (
            (m.group(), offset + m.start())
            for offset, piece in self._pieces(text)
            for m in self._scanner(piece).finditer(piece)
        )
        for word, start in matches:
            word_ids = self._bpe(word)
            ids.extend(word_ids)
            if word.isascii():
                pos = start
                for i in word_ids:
                    n = len(self.inverse[i])
                    offsets.append((pos, pos + n))
                    pos += n
                continue
            # Map each byte to its character, then each token to the characters its bytes touch.
            char_of_byte = [c for c, ch in enumerate(word) for _ in range(len(ch.encode("utf-8")))]
            pos = 0
            for i in word_ids:
                n = len(self.inverse[i])
                offsets.append((start + char_of_byte[pos], start + char_of_byte[pos + n - 1] + 1))
                pos += n
        return ids, offsets

    # -- decoding and vocabulary

    def token_bytes_of(self, id: int) -> bytes:
        token = self.inverse[id]
        if id in self._special_ids:
            return token.encode("utf-8")
        return bytes(self._unicode_to_byte[c] for c in token)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        data = bytearray()
        for i in ids:
            if i not in self.inverse or (skip_special_tokens and i in self._special_ids):
                continue
            data += self.token_bytes_of(i)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self) -> list[int]:
        return [
            0 if i in self._special_ids else len(self.token_bytes_of(i))
            for i in range(self.vocab_size)
        ]

    # -- formats

    def _pre_tokenizer_spec(self) -> dict:
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False}
        if self.pattern == PATTERNS["gpt2"]:
            return {**byte_level, "use_regex": True}
        split = {
            "type": "Split",
            "pattern": {"Regex": self.pattern},
            "behavior": "Isolated",
            "invert": False,
        }
        return {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}

    def to_spec(self) -> dict:
        return self._hf_spec(
            self.specials,
            pre_tokenizer=self._pre_tokenizer_spec(),
            decoder={
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": False,
                "use_regex": False,
            },
            model={
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {t: i for t, i in self.vocab.items() if t not in self.specials},
                "merges": [list(m) for m in self.merges],
            },
        )

    @classmethod
    def _recognises(cls, spec: dict) -> bool:
        pre = spec.get("pre_tokenizer") or {}
        kinds = [p.get("type") for p in pre.get("pretokenizers", [pre])]
        return spec.get("model", {}).get("type") == "BPE" and "ByteLevel" in kinds

    @classmethod
    def _from_spec(cls, spec: dict) -> BPETokenizer:
        model = spec["model"]
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise LmforgeError("only byte-level BPE without word prefixes/suffixes is supported")
        pre = spec["pre_tokenizer"]
        pattern = PATTERNS["gpt2"]
        if pre.get("type") == "Sequence":
            splits = [p for p in pre["pretokenizers"] if p.get("type") == "Split"]
            if splits:
                pattern = splits[0]["pattern"].get("Regex") or regex.escape(
                    splits[0]["pattern"]["String"]
                )
        elif pre.get("add_prefix_space"):
            raise LmforgeError("ByteLevel add_prefix_space=true is not supported")
        merges = [
            tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]
        ]
        vocab = dict(model["vocab"])
        specials = []
        for token in spec.get("added_tokens", []):
            vocab[token["content"]] = token["id"]
            if token.get("special"):
                specials.append(token["content"])
        return cls(vocab, merges, specials, pattern)

    def to_tiktoken(self, name: str = "lmforge"):
        """A `tiktoken.Encoding` with the same ids: tiktoken ranks are token ids, and since
        each merged token's id follows its merge order, lowest rank first is the same rule."""
        import tiktoken

        ranks = {
            self.token_bytes_of(i): i for i in range(self.vocab_size) if i not in self._special_ids
        }
        specials = {s: self.vocab[s] for s in self.specials}
        return tiktoken.Encoding(
            name=name, pat_str=self.pattern, mergeable_ranks=ranks, special_tokens=specials
        )
