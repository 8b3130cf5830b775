"""WordPiece, as in BERT (Schuster & Nakajima 2012; Wu et al. 2016; Devlin et al. 2019).

Pipeline, the same as Hugging Face's BertNormalizer, BertPreTokenizer and WordPiece model:

1. Normalize, one character at a time: drop NUL, U+FFFD and control/format characters,
   turn whitespace into spaces, put spaces around CJK ideographs, then (for uncased models)
   strip accents (NFD, drop non-spacing marks) and lower-case. Every normalized character
   remembers the original character it came from, so offsets point into the original text.
2. Pre-tokenize: split on whitespace and cut off every punctuation character on its own.
3. Model: each word is cut greedily, longest vocabulary match first; pieces after the first
   carry the `##` continuation prefix. A word with no full cut, or longer than
   `max_input_chars_per_word`, becomes a single `[UNK]`.

Training starts from the characters (`h ##e ##l ##l ##o`) and repeatedly merges the adjacent
pair whose merge most raises the likelihood of the corpus under a unigram model of the
pieces: about count(ab) * log(count(ab) * total / (count(a) * count(b))), computed exactly.
The bare ratio count(ab) / (count(a) * count(b)), the gain per occurrence, is the option
`criterion="ratio"`; it spends the vocabulary on rare pairs. Training works on unique words
with their counts; a merge touches only the words holding the pair, and since it lowers the
counts of both parts, the scores of the pairs holding either part rise; a per-symbol bound on
that rise re-scores them only when it could matter. Rare pairs are left out of the heap until a
bound on their score says they could win.

On disk it is a Hugging Face tokenizer.json; a BERT `vocab.txt` can be read as well.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import regex

from lmforge.errors import LmforgeError
from lmforge.tokenizers.base import Offset, TableVocab, Template, Tokenizer

CACHE_SIZE = 200_000  # words whose pieces are kept; the ids cache starts over when full

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNK = "[UNK]"
PREFIX = "##"
MAX_CHARS = 100

# BERT's CJK ideograph blocks. Google's BERT starts one of them at U+2B820; Hugging Face's
# BertNormalizer starts it at U+2B920, and we follow Hugging Face so that the tokenizer.json
# we write gives the same ids in both libraries.
_CJK = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]
# Unicode's White_Space property, which Rust's `char::is_whitespace` (and so Hugging Face)
# uses; Python's str.isspace() also counts U+001C..U+001F.
_ASCII_WHITESPACE = "\t\n\x0b\x0c\r "
_WHITESPACE = _ASCII_WHITESPACE + "\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# BERT's punctuation: every ASCII non-alphanumeric printable ('$', '+', '^' ... too) and
# Unicode category P.
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
_PUNCT = _ASCII_PUNCT + r"\p{P}"
_SPACE = regex.compile(f"[{_WHITESPACE}]")
_PRE_TOKEN = regex.compile(rf"[^{_WHITESPACE}{_PUNCT}]+|[{_PUNCT}]")
# The same for ASCII text, which the standard `re` splits ~2.5x faster than `regex`.
_ASCII_PRE_TOKEN = re.compile(rf"[^{_ASCII_WHITESPACE}{_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")


def _pre_tokens(normalized: str) -> regex.Pattern | re.Pattern:
    return _ASCII_PRE_TOKEN if normalized.isascii() else _PRE_TOKEN


def _is_cjk(code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in _CJK)


def _is_control(char: str) -> bool:
    # Tab and newlines are whitespace, not control. Unassigned code points (Cn) are kept,
    # as Hugging Face does.
    return char not in "\t\n\r" and unicodedata.category(char) in {"Cc", "Cf", "Co", "Cs"}


class _CharTable(dict):
    """Code point -> its normalized string, filled on first sight, for `str.translate`."""

    def __init__(self, clean_text: bool, cjk: bool, strip_accents: bool, lowercase: bool):
        super().__init__()
        self.options = clean_text, cjk, strip_accents, lowercase

    def __missing__(self, code: int) -> str:
        clean_text, cjk, strip_accents, lowercase = self.options
        out = chr(code)
        if clean_text:
            if code in (0, 0xFFFD) or _is_control(out):
                out = ""
            elif _SPACE.match(out):
                out = " "
        if cjk and _is_cjk(code):
            out = f" {out} "
        if strip_accents:
            nfd = unicodedata.normalize("NFD", out)
            out = "".join(c for c in nfd if unicodedata.category(c) != "Mn")
        if lowercase:  # per character, as Rust's char::to_lowercase (no final-sigma rule)
            out = "".join(c.lower() for c in out)
        self[code] = out
        return out


def _cleanup(text: str) -> str:
    """Hugging Face's WordPiece decoder cleanup: no space before . ? ! , and English clitics."""
    for dirty, clean in [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" do not", " don't"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]:
        text = text.replace(dirty, clean)
    return text


class _XLogX(dict):
    """x -> x log x (0 for 0), computed on first sight: training asks for the same counts
    again and again."""

    def __missing__(self, x: int) -> float:
        value = self[x] = x * math.log(x) if x > 0 else 0.0
        return value


Pair = tuple[int, int]


class _Corpus:
    """The training words as symbol ids with their counts, and the counts of every symbol
    and adjacent pair, kept current as merges rewrite the words."""

    def __init__(self, word_counts: dict[str, int], prefix: str):
        self.prefix = prefix
        self.names: list[str] = []  # symbol id -> token text
        self.ids: dict[str, int] = {}
        self.words = [
            [self.symbol(w[0])] + [self.symbol(prefix + c) for c in w[1:]] for w in word_counts
        ]
        self.counts = list(word_counts.values())
        self.sym_count: dict[int, int] = defaultdict(int)
        self.pair_count: dict[Pair, int] = defaultdict(int)
        self.where: dict[Pair, set[int]] = defaultdict(set)  # pair -> words holding it
        for i, (word, count) in enumerate(zip(self.words, self.counts)):
            for s in word:
                self.sym_count[s] += count
            for pair in zip(word, word[1:]):
                self.pair_count[pair] += count
                self.where[pair].add(i)
        self.total = sum(self.sym_count.values())  # pieces in the corpus; merges remove some

    def symbol(self, text: str) -> int:
        if text not in self.ids:
            self.ids[text] = len(self.names)
            self.names.append(text)
        return self.ids[text]

    def merge(self, pair: Pair) -> tuple[str, bool, dict[int, int], dict[Pair, int]]:
        """Rewrite every word holding `pair` with the merged symbol: (its text, whether the
        text is new, the change of each symbol's count, the change of each pair's count)."""
        a, b = pair
        text = self.names[a] + self.names[b][len(self.prefix) :]  # b is always a ## piece
        fresh = text not in self.ids  # another split of the same string may have made it
        new = self.symbol(text)
        pair_delta: dict[Pair, int] = defaultdict(int)
        sym_delta: dict[int, int] = defaultdict(int)
        for i in self.where.pop(pair):
            word, count = self.words[i], self.counts[i]
            if a not in word or b not in word:  # `where` keeps words that lost the pair
                continue
            out, j = [], 0
            while j < len(word):
                if j + 1 < len(word) and word[j] == a and word[j + 1] == b:
                    out.append(new)
                    sym_delta[a] -= count
                    sym_delta[b] -= count
                    sym_delta[new] += count
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            for p in zip(word, word[1:]):
                pair_delta[p] -= count
            for p in zip(out, out[1:]):
                pair_delta[p] += count
                self.where[p].add(i)
            self.words[i] = out
        for s, delta in sym_delta.items():
            self.sym_count[s] += delta
        self.total -= sym_delta[new]
        return text, fresh, sym_delta, pair_delta


def _likelihood_gain(corpus: _Corpus, xlogx: _XLogX, pair: Pair) -> float:
    """Change of the corpus log-likelihood, sum of c log(c / total) over pieces, under a
    unigram model of the pieces when the n pairs a b become n pieces ab."""
    n, a, b = corpus.pair_count[pair], corpus.sym_count[pair[0]], corpus.sym_count[pair[1]]
    if pair[0] == pair[1]:
        rest = a - 2 * n
        change = xlogx[n] - xlogx[a] + (xlogx[rest] if rest > 0 else 0.0)
    else:
        change = xlogx[n] - xlogx[a] - xlogx[b]
        change += xlogx[a - n]  # 0 when a == n
        change += xlogx[b - n]
    total = corpus.total
    return change + xlogx[total] - xlogx[total - n]


def _ratio(corpus: _Corpus, pair: Pair) -> float:
    return corpus.pair_count[pair] / (corpus.sym_count[pair[0]] * corpus.sym_count[pair[1]])


class _PairQueue:
    """The pairs by score, best first, updated lazily.

    A max-heap of (score, pair) where each kept pair's best entry is never below its
    current score: a change that can raise a score (fewer a's or b's) pushes a fresh entry,
    and the shrinking total only lowers likelihood gains. So a popped pair whose current
    score is still at least the next entry's is the best of the kept pairs; otherwise it
    goes back re-scored. Rare pairs cannot win early, so for likelihood the heap keeps only
    pairs seen at least `cut` times (and pairs of a symbol with itself, which the bound does
    not cover). Its best is taken only if it beats bound(cut - 1), the most any rarer pair
    can score; else `cut` comes down and the pairs it lets in are pushed. Ratio scores
    favour rare pairs: there `cut` stays 1 and all are kept. `best[p]` is the key of p's
    entry that covers its score; an entry whose key differs is a stale copy and is dropped
    when popped. A re-scored pair is pushed again only if its score went above `best[p]`,
    which keeps the heap free of copies.

    A merge lowers the counts of its parts, which raises the scores of all their pairs,
    mostly by very little. So entries are pushed `slack` * n above the score, and only a
    per-symbol bound decides when s's pairs must be re-scored. The score's part in s,
    xlogx(s - n) - xlogx(s), grows by at most log(s / (s - n)) <= n / (s - n) per lost s:
    so with m the largest count of s's pairs, `drift[s]` sums lost / (s - m) and the pairs
    are re-scored once it passes slack / 2 (the other half is for the other part). Pairs
    holding more than half of s (at most one each side) and pairs of s with itself would
    make m useless: they are `heavy` and re-scored at every drop of s. A popped pair that
    loses goes back at its exact score and is `watched` until s drops again.
    """

    def __init__(self, corpus: _Corpus, criterion: str):
        self.corpus = corpus
        xlogx = _XLogX()
        if criterion == "ratio":
            self.score = lambda p: _ratio(corpus, p)
        else:
            self.score = lambda p: _likelihood_gain(corpus, xlogx, p)
        self.slack = 0.5 if criterion == "likelihood" else 0.0
        self.cut = 1
        pair_count = corpus.pair_count
        self.best = {p: self.score(p) + self.slack * n for p, n in pair_count.items()}
        self.heap = [(-v, p) for p, v in self.best.items()]
        heapq.heapify(self.heap)
        if criterion == "likelihood" and self.heap:
            self.cut = max(pair_count.values()) + 1
        self.partners: dict[int, set[Pair]] = defaultdict(set)  # symbol -> kept pairs
        self.most: dict[int, int] = defaultdict(int)  # largest count of a light pair of s
        self.heavy: dict[int, set[Pair]] = defaultdict(set)
        self.drift: dict[int, float] = defaultdict(float)
        self.watched: dict[int, set[Pair]] = defaultdict(set)
        for p, n in pair_count.items():
            if self.kept(p, n):
                self.keep(p)
        if self.heap and self.cut > 1:
            self.lower_cut(-self.heap[0][0])

    def bound(self, n: int) -> float:
        """The most a pair of two different symbols seen n times can score: when each part
        occurs only in the pair, since fewer a's or b's only raise the likelihood gain. A
        little is added for rounding."""
        total = self.corpus.total
        n = min(n, total // 2)  # no pair is seen more often
        if n <= 0:
            return -math.inf
        log = math.log
        gain = total * log(total) - (total - n) * log(total - n) - n * log(n)
        return gain + 1e-12 * total * log(total)

    def classify(self, p: Pair, s: int) -> None:
        n = self.corpus.pair_count[p]
        if p[0] == p[1] or 2 * n > self.corpus.sym_count[s]:
            self.heavy[s].add(p)
        elif n > self.most[s]:
            self.most[s] = n

    def kept(self, p: Pair, n: int) -> bool:
        return n >= self.cut or (n > 0 and p[0] == p[1])

    def keep(self, p: Pair) -> None:
        self.partners[p[0]].add(p)
        self.partners[p[1]].add(p)
        self.classify(p, p[0])
        self.classify(p, p[1])

    def push(self, p: Pair, value: float) -> None:
        if value > self.best.get(p, -math.inf):
            self.best[p] = value
            heapq.heappush(self.heap, (-value, p))

    def push_scored(self, p: Pair) -> None:
        self.push(p, self.score(p) + self.slack * self.corpus.pair_count[p])

    def put_back(self, p: Pair, value: float) -> None:
        """A popped pair that lost, at its exact score, watched until a part drops."""
        self.push(p, value)
        self.watched[p[0]].add(p)
        self.watched[p[1]].add(p)

    def lower_cut(self, top: float) -> None:
        """Keep every pair that might score above 0.8 * `top` in the heap."""
        target, lo, hi = 0.8 * top, 0, self.cut - 1  # largest n < cut with bound(n) < target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.bound(mid) < target:
                lo = mid
            else:
                hi = mid - 1
        new_cut = lo + 1 if top > 0 else 1
        for p, n in self.corpus.pair_count.items():
            if new_cut <= n < self.cut:
                self.push(p, self.score(p) + self.slack * n)
                self.keep(p)
        self.cut = new_cut

    def pop_best(self) -> Pair | None:
        """The pair to merge next, or None when no pair is left."""
        while True:
            if not self.heap:
                if self.cut == 1:
                    return None
                self.lower_cut(-math.inf)
                continue
            neg, pair = heapq.heappop(self.heap)
            if self.best.get(pair) != -neg:
                continue  # a stale copy: p's covering entry is still in the heap
            del self.best[pair]
            if self.corpus.pair_count.get(pair, 0) == 0:
                continue
            current = self.score(pair)
            if self.heap and current < -self.heap[0][0]:
                self.put_back(pair, current)
                continue
            if current < self.bound(self.cut - 1):
                self.put_back(pair, current)
                self.lower_cut(current)
                continue
            return pair

    def merged(self, pair: Pair, sym_delta: dict[int, int], pair_delta: dict[Pair, int]):
        """Re-score what the merge of `pair` changed."""
        pair_count, sym_count = self.corpus.pair_count, self.corpus.sym_count
        touched: set[Pair] = set()
        for s in set(pair):  # their counts dropped, so their pairs' scores rose
            touched |= self.watched.pop(s, set())
            touched |= self.heavy[s]
            left = sym_count[s]
            if left > self.most[s]:
                self.drift[s] -= sym_delta[s] / (left - self.most[s])
            else:
                self.drift[s] = math.inf
            if self.drift[s] > self.slack / 2:
                self.drift[s], self.most[s], self.heavy[s] = 0.0, 0, set()
                touched |= self.partners[s]
                for p in self.partners[s]:
                    self.classify(p, s)
        for p, delta in pair_delta.items():
            if delta == 0:
                continue
            n = pair_count[p] = pair_count[p] + delta
            if n <= 0:
                del pair_count[p]
            if self.kept(p, n):
                self.keep(p)
                touched.add(p)
            else:
                self.partners[p[0]].discard(p)
                self.partners[p[1]].discard(p)
        for p in touched:
            if pair_count.get(p, 0) > 0:
                self.push_scored(p)


def _train_pieces(
    word_counts: dict[str, int], n_new: int, prefix: str, criterion: str = "likelihood"
) -> list[str]:
    """Up to `n_new` merged tokens, in the order the criterion picks them."""
    corpus = _Corpus(word_counts, prefix)
    queue = _PairQueue(corpus, criterion)
    merged: list[str] = []
    while len(merged) < n_new:
        pair = queue.pop_best()
        if pair is None:
            break
        text, fresh, sym_delta, pair_delta = corpus.merge(pair)
        if fresh:
            merged.append(text)
        queue.merged(pair, sym_delta, pair_delta)
    return merged


class WordPieceTokenizer(TableVocab, Tokenizer):
    algorithm = "wordpiece"
    default_specials = tuple(BERT_SPECIALS)

    def __init__(
        self,
        vocab: dict[str, int],
        specials: list[str],
        *,
        unk_token: str = UNK,
        prefix: str = PREFIX,
        max_input_chars_per_word: int = MAX_CHARS,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        cleanup: bool = True,
    ):
        if unk_token not in vocab:
            raise LmforgeError(f"the WordPiece vocabulary lacks its unknown token {unk_token!r}")
        self.vocab = vocab
        self.inverse = {i: t for t, i in vocab.items()}
        self.specials = specials
        self.unk_token = unk_token
        self.prefix = prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.lowercase = lowercase
        self.strip_accents = strip_accents  # None: follow `lowercase`, as Hugging Face does
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.cleanup = cleanup
        strip = lowercase if strip_accents is None else strip_accents
        self._table = _CharTable(clean_text, handle_chinese_chars, strip, lowercase)
        self._unk_id = vocab[unk_token]
        self._longest = max(map(len, vocab))  # no match can be longer; bounds the search
        self._special_ids = {vocab[s] for s in specials if s in vocab}
        self._cache: dict[str, list[tuple[int, int, int]]] = {}  # word -> pieces, for offsets
        self._ids: dict[str, tuple[int, ...]] = {}  # word -> ids, for plain encoding
        has = vocab.__contains__
        self.template = (
            Template(["[CLS]", "$A", "[SEP]"], ["[CLS]", "$A", "[SEP]", "$B:1", "[SEP]:1"])
            if has("[CLS]") and has("[SEP]")
            else None
        )
        self.pad_token = "[PAD]" if has("[PAD]") else None

    # -- training and loading

    @classmethod
    def _train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None,
        specials: list[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        criterion: str = "likelihood",
    ) -> WordPieceTokenizer:
        """Options: `lowercase`/`strip_accents` as for uncased or cased BERT; `criterion`
        'likelihood' (the gain in corpus log-likelihood) or 'ratio' (count(ab) / (count(a)
        * count(b)), the per-occurrence gain, which favours rare pairs)."""
        if criterion not in {"likelihood", "ratio"}:
            raise LmforgeError(f"unknown criterion '{criterion}'; use 'likelihood' or 'ratio'")
        # BERT's five special tokens are always there: the model needs [UNK], the template
        # [CLS] and [SEP], padding [PAD]. Others asked for come after them.
        specials = BERT_SPECIALS + [s for s in specials if s not in BERT_SPECIALS]
        vocab_size = vocab_size or 8192
        strip = lowercase if strip_accents is None else strip_accents
        table = _CharTable(clean_text=True, cjk=True, strip_accents=strip, lowercase=lowercase)
        words: Counter[str] = Counter()
        for text in texts:
            normalized = text.translate(table)
            words.update(_pre_tokens(normalized).findall(normalized))
        if not words:
            raise LmforgeError("the corpus is empty: nothing to train the tokenizer on")
        alphabet = {w[0] for w in words} | {PREFIX + c for w in words for c in w[1:]}
        alphabet = sorted(alphabet - set(specials))
        if vocab_size < len(specials) + len(alphabet):
            raise LmforgeError(
                f"the corpus needs {len(alphabet)} character tokens (word-initial and ## "
                f"forms), which with {len(specials)} special tokens need vocab_size >= "
                f"{len(specials) + len(alphabet)} (got {vocab_size})"
            )
        tokens = specials + alphabet
        for token in _train_pieces(words, vocab_size - len(tokens), PREFIX, criterion):
            if token not in specials:
                tokens.append(token)
        vocab = {t: i for i, t in enumerate(tokens)}
        return cls(vocab, specials, lowercase=lowercase, strip_accents=strip_accents)

    @classmethod
    def from_vocab_file(
        cls, path: str | Path, lowercase: bool = True, strip_accents: bool | None = None
    ) -> WordPieceTokenizer:
        """Read a BERT `vocab.txt`: one token a line, the id is the line number."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LmforgeError(f"cannot read the vocabulary {path}: {e}") from None
        # Only "\n" ends a line: str.splitlines would also cut at U+0085, U+2028 ...
        lines = text.removesuffix("\n").split("\n") if text else []
        vocab: dict[str, int] = {}
        for i, line in enumerate(lines):
            token = line.removesuffix("\r")
            if token in vocab:
                raise LmforgeError(
                    f"{path}: token {token!r} on line {i + 1} repeats line {vocab[token] + 1}"
                )
            vocab[token] = i
        if UNK not in vocab:
            raise LmforgeError(f"{path} is not a BERT vocabulary: it has no {UNK} token")
        specials = [s for s in BERT_SPECIALS if s in vocab]
        return cls(vocab, specials, lowercase=lowercase, strip_accents=strip_accents)

    @classmethod
    def _recognises(cls, spec: dict) -> bool:
        return spec.get("model", {}).get("type") == "WordPiece"

    @classmethod
    def _from_spec(cls, spec: dict) -> WordPieceTokenizer:
        model = spec["model"]
        normalizer = spec.get("normalizer") or {
            "type": "BertNormalizer",
            "clean_text": False,
            "handle_chinese_chars": False,
            "strip_accents": False,
            "lowercase": False,
        }
        if normalizer["type"] != "BertNormalizer":
            raise LmforgeError(
                f"WordPiece with a {normalizer['type']} normalizer is not supported; "
                "lmforge reads BertNormalizer"
            )
        pre = (spec.get("pre_tokenizer") or {}).get("type")
        if pre != "BertPreTokenizer":
            raise LmforgeError(
                f"WordPiece with pre-tokenizer {pre} is not supported; lmforge reads "
                "BertPreTokenizer"
            )
        vocab = dict(model["vocab"])
        specials = []
        for token in spec.get("added_tokens", []):
            vocab.setdefault(token["content"], token["id"])
            if token.get("special"):
                specials.append(token["content"])
        decoder = spec.get("decoder") or {}
        tok = cls(
            vocab,
            specials,
            unk_token=model.get("unk_token", UNK),
            prefix=model.get("continuing_subword_prefix", PREFIX),
            max_input_chars_per_word=model.get("max_input_chars_per_word", MAX_CHARS),
            lowercase=normalizer.get("lowercase", True),
            strip_accents=normalizer.get("strip_accents"),
            clean_text=normalizer.get("clean_text", True),
            handle_chinese_chars=normalizer.get("handle_chinese_chars", True),
            cleanup=decoder.get("cleanup", True),
        )
        tok.template = Template.from_spec(spec.get("post_processor"))
        pad = (spec.get("padding") or {}).get("pad_token")
        if pad in vocab:
            tok.pad_token = pad
        return tok

    def to_spec(self) -> dict:
        return self._hf_spec(
            self.specials,
            normalizer={
                "type": "BertNormalizer",
                "clean_text": self.clean_text,
                "handle_chinese_chars": self.handle_chinese_chars,
                "strip_accents": self.strip_accents,
                "lowercase": self.lowercase,
            },
            pre_tokenizer={"type": "BertPreTokenizer"},
            post_processor=self.template.to_spec(self.token_to_id) if self.template else None,
            decoder={"type": "WordPiece", "prefix": self.prefix, "cleanup": self.cleanup},
            model={
                "type": "WordPiece",
                "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "vocab": self.vocab,
            },
        )

    # -- encoding

    def _words(self, text: str) -> list[str]:
        normalized = text.translate(self._table)
        return _pre_tokens(normalized).findall(normalized)

    def _pieces(self, word: str) -> list[tuple[int, int, int]]:
        """(id, start, end) of each piece, offsets into `word`."""
        pieces = self._cache.get(word)
        if pieces is None:
            pieces = self._greedy(word)
            if len(self._cache) < CACHE_SIZE:
                self._cache[word] = pieces
        return pieces

    def _greedy(self, word: str) -> list[tuple[int, int, int]]:
        """Longest vocabulary match first, then the longest `##` match after it, and so on."""
        n = len(word)
        unknown = [(self._unk_id, 0, n)]
        if n > self.max_input_chars_per_word:
            return unknown
        pieces, start = [], 0
        while start < n:
            for end in range(min(n, start + self._longest), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                id = self.vocab.get(piece)
                if id is not None:
                    pieces.append((id, start, end))
                    start = end
                    break
            else:  # nothing in the vocabulary fits here: the whole word is unknown
                return unknown
        return pieces

    def _encode_ordinary(self, text: str) -> list[int]:
        # The hot path: dict look-ups of cached words, their ids joined in one pass.
        words = self._words(text)
        try:
            return list(chain.from_iterable(map(self._ids.__getitem__, words)))
        except KeyError:  # words not seen before
            new = set(words).difference(self._ids)
            if len(self._ids) + len(new) > CACHE_SIZE:  # start over, keeping this text's words
                self._ids.clear()
                new = set(words)
            for word in new:
                self._ids[word] = tuple(id for id, _, _ in self._greedy(word))
            return list(chain.from_iterable(map(self._ids.__getitem__, words)))

    def _encode_ordinary_offsets(self, text: str) -> tuple[list[int], list[Offset]]:
        table = self._table
        normalized = text.translate(table)
        origin = None  # normalized position -> original position, when they differ
        if any(len(table[ord(c)]) != 1 for c in set(text)):
            origin = [i for i, c in enumerate(text) for _ in table[ord(c)]]
        ids: list[int] = []
        offsets: list[Offset] = []
        for m in _pre_tokens(normalized).finditer(normalized):
            for id, a, b in self._pieces(m.group()):
                a, b = m.start() + a, m.start() + b
                ids.append(id)
                offsets.append((origin[a], origin[b - 1] + 1) if origin else (a, b))
        return ids, offsets

    # -- decoding and vocabulary

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Tokens joined by spaces, `##` pieces glued to the one before, as Hugging Face's
        WordPiece decoder (with its cleanup of spaces before punctuation)."""
        out = []
        for i in ids:
            token = self.inverse.get(i)
            if token is None or (skip_special_tokens and i in self._special_ids):
                continue
            if out:
                token = token[len(self.prefix) :] if token.startswith(self.prefix) else " " + token
            out.append(_cleanup(token) if self.cleanup else token)
        return "".join(out)

    def token_bytes(self) -> list[int]:
        sizes = super().token_bytes()
        for i, size in enumerate(sizes):
            if size and self.inverse.get(i, "").startswith(self.prefix):
                sizes[i] = size - len(self.prefix.encode("utf-8"))
        return sizes
