"""Unigram language-model tokenizer, as in SentencePiece (Kudo 2018).

The model is a vocabulary of pieces, each with a log-probability; a text's probability under
one segmentation is the product of its pieces' probabilities. Encoding picks the most
probable segmentation (Viterbi over the lattice of all pieces that occur in the text);
subword regularisation instead draws a segmentation with probability proportional to
P(segmentation)^alpha (forward filtering, backward sampling on the same lattice).

Pre-tokenization is SentencePiece's, as Hugging Face's `Metaspace` does it: spaces become
'▁' (U+2581), a '▁' is put in front of the text unless it already starts with one, and the
text is cut before every '▁', so a piece never spans two words. There is no normalizer, so
every character maps back to one character of the input (the prepended '▁' to the first).
Characters missing from the vocabulary become `<unk>`; a run of them is one `<unk>`.

Training (Kudo's EM with pruning, on the unique words and their counts):
  1. Seed: every character, plus the substrings of up to 16 characters that occur at least
     twice, the most frequent (count x length) first, with log(count / total) as score.
  2. EM: the E-step runs forward-backward over each word's lattice for the expected number
     of times each piece is used, times the word's count; the M-step turns expected counts
     into log-probabilities. Like SentencePiece we use the Bayesian (variational) update,
     digamma(count) - digamma(total), which shrinks rare pieces more than log(count/total)
     would, and we drop pieces expected less than half a time.
  3. Pruning: for each piece, the loss in corpus likelihood if it were removed and its uses
     went to its best segmentation by the other pieces; the best 75% stay (characters always
     stay). Two EM steps, prune, repeat until 10% above the target size; then keep the
     highest-scoring pieces up to the target and re-fit them with two last EM steps.
The E-step and the corpus Viterbi see all words at once as one graph in numpy arrays (see
`_Lattices`), which makes training on a few megabytes take seconds, not minutes.

On disk it is a Hugging Face tokenizer.json: a Unigram model (vocab as [piece, score]
pairs and unk_id), Metaspace pre-tokenizer and decoder.
"""

from __future__ import annotations

import functools
import math
import random
import re
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, chain, repeat

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.tokenizers.base import Offset, Template, Tokenizer, without_cyclic_gc

UNK = "<unk>"
SPACE = "\u2581"  # '▁', SentencePiece's visible space
MAX_PIECE_LENGTH = 16
CACHE_SIZE = 200_000  # words whose segmentation is kept; the cache starts over when full
BATCH_SEGMENTATION = 64  # from this many new words, segment them together in numpy
DENSE_TRIE = 1 << 22  # transitions kept as a dense (node, character) table up to this size
SCORE_TABLE = 1 << 22  # cells of the score tables of one batch segmentation chunk (see below)
UNK_PENALTY = 10.0  # <unk> scores this far below the rarest piece, as in SentencePiece and HF
_NO_PREPEND = ("", " ", SPACE)  # how texts start that get no '▁' put in front
_METASPACE = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True}


def _bare_words(text: str) -> list[str]:
    """The pre-tokens of `text` without their leading '▁': spaces and '▁' both cut, and the
    empty part before a leading one dropped, since no '▁' is prepended there."""
    words = text.replace(SPACE, " ").split(" ")
    return words[1:] if text[:1] in _NO_PREPEND else words


def _words(text: str) -> list[str]:
    return [SPACE + word for word in _bare_words(text)]


# -- lattices of one word, for encoding, sampling and finding a piece's alternatives


def _lattice(word, index, scores, unk_id, unk_score, max_len, skip_whole=False):
    """incoming[end]: (start, id, score) of every piece of `word` that ends at `end`, in order
    of start. A character that is not a piece itself gets an <unk> edge, so a path exists.
    `skip_whole` leaves out the piece spanning the whole word (to find its alternatives)."""
    n = len(word)
    incoming: list[list[tuple[int, int, float]]] = [[] for _ in range(n + 1)]
    for start in range(n):
        has_char = False
        for end in range(start + 1, min(n, start + max_len) + 1):
            id = index.get(word[start:end])
            if id is None or (skip_whole and end - start == n):
                continue
            incoming[end].append((start, id, scores[id]))
            has_char |= end == start + 1
        if not has_char:
            incoming[start + 1].append((start, unk_id, unk_score))
    return incoming


def _viterbi(incoming) -> list[tuple[int, int, int]]:
    """The best path as (start, end, id). Ties go to the earliest start, as in Hugging Face,
    so both libraries pick the same segmentation."""
    n = len(incoming) - 1
    best = [0.0] + [-math.inf] * n
    back = [(0, 0)] * (n + 1)
    for end in range(1, n + 1):
        for start, id, score in incoming[end]:
            total = best[start] + score
            if total > best[end]:
                best[end], back[end] = total, (start, id)
    return _backtrack(back)


def _backtrack(back: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The path as (start, end, id), from back[end] = (start, id) of each node's best edge."""
    path, end = [], len(back) - 1
    while end > 0:
        start, id = back[end]
        path.append((start, end, id))
        end = start
    return path[::-1]


def _sample(incoming, alpha: float, rng: random.Random) -> list[tuple[int, int, int]]:
    """A path drawn with probability proportional to exp(alpha * score): forward sums over
    all paths into each node, then walk back from the end choosing each incoming edge in
    proportion to (paths into its start) x (its weight)."""
    n = len(incoming) - 1
    forward = [0.0] + [-math.inf] * n  # log of the summed weight of all paths into a node
    for end in range(1, n + 1):
        terms = [forward[s] + alpha * score for s, _, score in incoming[end]]
        top = max(terms)
        forward[end] = top + math.log(sum(math.exp(t - top) for t in terms))
    path, end = [], n
    while end > 0:
        edges = incoming[end]
        weights = [math.exp(forward[s] + alpha * score - forward[end]) for s, _, score in edges]
        start, id, _ = rng.choices(edges, weights)[0]
        path.append((start, end, id))
        end = start
    return path[::-1]


def _fuse_unknown(path, unk_id):
    """Neighbouring <unk> edges become one token, as SentencePiece and HF emit them."""
    fused: list[tuple[int, int, int]] = []
    for start, end, id in path:
        if id == unk_id and fused and fused[-1][2] == unk_id:
            fused[-1] = (fused[-1][0], end, id)
        else:
            fused.append((start, end, id))
    return fused


# -- training


def _digamma(x: np.ndarray) -> np.ndarray:
    """psi(x) for x >= 0.5: shift x up with psi(x) = psi(x + 1) - 1/x, then the asymptotic
    series (error below 3e-9 once x >= 6)."""
    x = np.array(x, dtype=np.float64)
    result = np.zeros_like(x)
    for _ in range(6):
        small = x < 6
        result[small] -= 1 / x[small]
        x[small] += 1
    inv2 = 1 / (x * x)
    return result + np.log(x) - 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def _steps(order: np.ndarray, level: np.ndarray, target: np.ndarray):
    """Cut a pass into steps: `order` lists the edges sorted by (level, target node), where
    the level of an edge is how far its target is from where the pass starts, so a step only
    reads nodes that earlier steps finished. Within a step the edges into one node sit side
    by side for `ufunc.reduceat`. Each step is (edges, where each target's run begins,
    the target nodes)."""
    level, target = level[order], target[order]
    runs = np.flatnonzero(np.diff(target, prepend=-1))
    bounds = np.append(np.flatnonzero(np.diff(level, prepend=-1)), len(order))
    steps = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        run = runs[np.searchsorted(runs, lo) : np.searchsorted(runs, hi)]
        steps.append((order[lo:hi], run - lo, target[run]))
    return steps


class _Lattices:
    """The lattices of all training words as one graph in flat numpy arrays.

    Word w owns nodes first[w]..last[w] (the positions between its characters); each edge is
    one occurrence of a piece in a word. A pass over the graph advances one character at a
    time for all words together, so it costs a few numpy calls per position (words are
    short) instead of Python work per edge.
    """

    def __init__(self, first, last, src, dst, piece, word, backward=None):
        """`backward` given: the edges are sorted for the forward pass (by end position)
        and it is their order for the backward pass. Without it the lattices can only be
        counted over and restricted, which sorts them."""
        self.first, self.last = first, last
        self.src, self.dst, self.piece, self.word = src, dst, piece, word
        self.n_nodes = int(last[-1]) + 1
        self._backward = backward
        self._steps = None

    @classmethod
    def of_words(cls, words: list[str], max_len: int) -> tuple[_Lattices, dict[str, int]]:
        """The lattices with every substring of up to `max_len` characters as a piece, and
        the id of each substring."""
        index: dict[str, int] = {}
        ids = array("q")  # the substring at each (word, start, end), in that order
        for word in words:
            n = len(word)
            for i in range(n):
                for j in range(i + 1, min(n, i + max_len) + 1):
                    ids.append(index.setdefault(word[i:j], len(index)))
        # Where each of those occurrences sits: repeat each character's start node once per
        # substring starting there.
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        first = np.cumsum(lengths + 1) - lengths - 1
        word_of_char = np.repeat(np.arange(len(words)), lengths)
        start = np.arange(int(lengths.sum())) + word_of_char  # node before each character
        count = np.minimum(max_len, (first + lengths)[word_of_char] - start)
        src = np.repeat(start, count)
        dst = src + 1 + np.arange(len(src)) - np.repeat(np.cumsum(count) - count, count)
        word = np.repeat(word_of_char, count)
        piece = np.frombuffer(ids, dtype=np.int64)
        return cls(first, first + lengths, src, dst, piece, word), index

    @classmethod
    def sorted(cls, first, last, src, dst, piece, word) -> _Lattices:
        """Lattices from edges in any order, sorted for both passes."""
        order = np.lexsort((dst, dst - first[word]))
        src, dst, piece, word = src[order], dst[order], piece[order], word[order]
        backward = np.lexsort((src, last[word] - src))
        return cls(first, last, src, dst, piece, word, backward)

    def restrict(self, keep: np.ndarray) -> _Lattices:
        """The lattices with only the pieces in `keep` (a mask), renumbered in order."""
        edges = keep[self.piece]
        src, dst, word = self.src[edges], self.dst[edges], self.word[edges]
        piece = (np.cumsum(keep) - 1)[self.piece[edges]]
        if self._backward is None:
            return _Lattices.sorted(self.first, self.last, src, dst, piece, word)
        backward = (np.cumsum(edges) - 1)[self._backward[edges[self._backward]]]  # still sorted
        return _Lattices(self.first, self.last, src, dst, piece, word, backward)

    def _pass(self, backward: bool, weight, reduce) -> np.ndarray:
        """Forward: combine over the paths from each word's start into every node; backward:
        over the paths from every node to the word's end. `reduce` is logaddexp to sum
        probabilities or maximum for the best path."""
        if self._steps is None:
            forward = np.arange(len(self.src))
            self._steps = (
                _steps(forward, self.dst - self.first[self.word], self.dst),
                _steps(self._backward, self.last[self.word] - self.src, self.src),
            )
        steps = self._steps[backward]
        source = self.dst if backward else self.src
        value = np.full(self.n_nodes, -np.inf)
        value[self.last if backward else self.first] = 0.0
        for edges, runs, targets in steps:
            value[targets] = reduce.reduceat(value[source[edges]] + weight[edges], runs)
        return value

    def expected_counts(self, logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """E-step: how often each piece is used, averaged over every segmentation of every
        word in proportion to its probability, times the word's count."""
        weight = logp[self.piece]
        alpha = self._pass(False, weight, np.logaddexp)
        beta = self._pass(True, weight, np.logaddexp)
        log_z = alpha[self.last]
        posterior = np.exp(alpha[self.src] + weight + beta[self.dst] - log_z[self.word])
        return np.bincount(self.piece, posterior * counts[self.word], minlength=len(logp))

    def viterbi_counts(self, logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """How often each piece is used in the best segmentations, times word counts."""
        edges = self.best_paths(logp[self.piece])
        return np.bincount(self.piece[edges], counts[self.word[edges]], minlength=len(logp))

    def best_paths(self, weight: np.ndarray) -> np.ndarray:
        """The edges of every word's best path (edge weights summed), sorted by word and
        position. Ties go to the earliest start, as in `_viterbi`. The edges may be in any
        order: this groups them by how far into the word they start, and a node's best
        score is final once every edge starting before it has been seen."""
        level = self.src - self.first[self.word]
        if level.max(initial=0) < 2**15:  # small integers sort by radix, several times faster
            level = level.astype(np.int16)
        order = np.argsort(level, kind="stable")
        runs = np.searchsorted(level[order], np.arange(int(level.max(initial=0)) + 2))
        best = np.full(self.n_nodes, -np.inf)
        best[self.first] = 0.0
        for lo, hi in zip(runs[:-1], runs[1:]):
            edges = order[lo:hi]
            np.maximum.at(best, self.dst[edges], best[self.src[edges]] + weight[edges])
        src, dst = self.src[order], self.dst[order]
        tight = order[best[src] + weight[order] == best[dst]][::-1]
        back = np.zeros(self.n_nodes, dtype=np.int64)
        back[self.dst[tight]] = tight  # of repeated targets the last, the earliest start, stays
        path = []
        node = self.last.copy()
        active = np.arange(len(node))
        while active.size:
            edge = back[node[active]]
            path.append(edge)
            node[active] = self.src[edge]
            active = active[node[active] != self.first[active]]
        at_node = np.full(self.n_nodes, -1)  # each node starts at most one edge of a path
        for edges in path:
            at_node[self.src[edges]] = edges
        return at_node[at_node >= 0]  # in node order, which is word order


def _count_words(texts: Iterable[str], specials: list[str]) -> Counter[str]:
    cut = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True))))
    words: Counter[str] = Counter()
    for text in texts:
        for part in cut.split(text) if specials else [text]:
            words.update(_words(part))
    return words


def _seed(lattices: _Lattices, substrings: list[str], counts: np.ndarray, seed_size: int):
    """Which substrings training starts from: every character, and those seen at least
    twice, the most frequent (count x length) first; and the count of each substring."""
    freq = np.bincount(lattices.piece, counts[lattices.word], minlength=len(substrings))
    length = np.fromiter(map(len, substrings), dtype=np.int64, count=len(substrings))
    keep = length == 1
    longer = np.flatnonzero(~keep & (freq >= 2))
    keep[longer[np.argsort(-(freq * length)[longer], kind="stable")[:seed_size]]] = True
    return keep, freq


def _m_step(expected: np.ndarray, is_char: np.ndarray, drop: bool = True):
    """Which pieces stay (all characters, others expected at least half a time) and their
    new log-probabilities digamma(count) - digamma(total)."""
    keep = (expected >= 0.5) | is_char if drop else np.ones(len(expected), dtype=bool)
    counts = np.maximum(expected[keep], 0.5)  # a barely used character still gets a score
    return keep, _digamma(counts) - _digamma(counts.sum())


def _prune(pieces, logp, is_char, lattices, counts, size: int) -> np.ndarray:
    """Which pieces to keep: characters, then the pieces whose removal would cost most.

    Removing a piece sends each of its uses (in the best segmentations) to its own best
    segmentation by the other pieces, as in SentencePiece: the loss is the drop in
    log-likelihood, freq * (log p(piece) - sum of log p(alternatives) after the move).
    The alternatives of all pieces are found together, by batch segmentation."""
    freq = lattices.viterbi_counts(logp, counts)
    total = freq.sum()
    loss = np.full(len(pieces), -np.inf)  # never used (freq 0): dropped
    used = np.flatnonzero((freq > 0) & ~is_char)
    if used.size:
        by_others = UnigramTokenizer([(UNK, 0.0), *zip(pieces, logp.tolist())], 0, [UNK])
        paths = by_others._best_paths([pieces[i] for i in used], skip_whole=True)
        n = np.fromiter(map(len, paths), dtype=np.int64, count=len(paths))
        alternatives = np.fromiter(chain.from_iterable(paths), dtype=np.int64) - 1  # <unk>
        f = freq[used]
        log_total = np.log(total + f * (n - 1))
        logs = np.log(freq[alternatives] + np.repeat(f, n))
        logp_alternatives = np.add.reduceat(logs, np.cumsum(n) - n) - n * log_total
        loss[used] = f * (np.log(f / total) - logp_alternatives)
    ranked = np.argsort(-loss, kind="stable")[: np.count_nonzero(loss > -np.inf)]
    keep = is_char.copy()
    keep[ranked[: max(size - int(is_char.sum()), 0)]] = True
    return keep


class UnigramTokenizer(Tokenizer):
    algorithm = "unigram"

    def __init__(self, vocab: list[tuple[str, float]], unk_id: int, specials: list[str]):
        """`vocab`: (piece, log-probability) by id, special tokens included (score 0)."""
        if not 0 <= unk_id < len(vocab):
            raise LmforgeError(f"unigram unk_id={unk_id} is outside the vocabulary")
        self.vocab = vocab
        self.unk_id = unk_id
        self.unk_token = vocab[unk_id][0]
        self.specials = [s for s in specials if s != self.unk_token]
        self.index = {piece: i for i, (piece, _) in enumerate(vocab)}
        self._special_ids = {self.index[s] for s in self.special_tokens if s in self.index}
        # The lattice uses ordinary pieces only; special tokens are cut out before it.
        self._pieces = {p: i for p, i in self.index.items() if i not in self._special_ids}
        self._scores = [score for _, score in vocab]
        self._unk_score = min(self._scores) - UNK_PENALTY
        self._max_len = max(map(len, self._pieces), default=1)
        self._edge_scores = np.array([*self._scores, self._unk_score])  # unknown: the last
        # word (without its leading '▁') -> ids: segmenting is the costly part of encoding.
        self._cache: dict[str, tuple[int, ...]] = {}

    @functools.cached_property
    def _trie(self) -> tuple[np.ndarray, int, np.ndarray, int, np.ndarray]:
        """The pieces as a character trie in arrays, for `_best_paths`: the alphabet (sorted
        code points, then a sentinel above them all; character i of it has id i + 1, and 0
        stands for any other), its width (ids per node), the transitions (see `_children`),
        the number of nodes with children, and the piece id at each node (-1: none).

        Node 0 is "no such node" and 1 the root; nodes with children come first, so a walk
        that reaches a later one (a leaf) ends there. Built from the sorted pieces in numpy:
        a piece's prefix of length d + 1 is a new node unless the piece before shares it."""
        pieces = sorted(self._pieces)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        depth = self._max_len
        padded = "".join(p.ljust(depth, "\0") for p in pieces).encode("utf-32-le")
        codes = np.frombuffer(padded, dtype=np.uint32).reshape(len(pieces), depth)
        real = np.arange(depth) < lengths[:, None]  # not padding
        alphabet = np.append(np.unique(codes[real]), np.uint32(0xFFFFFFFF))
        chars = np.searchsorted(alphabet, codes) + 1
        same = np.cumprod((codes[1:] == codes[:-1]) & real[:-1], axis=1)
        shared = np.concatenate([[0], same.sum(axis=1)])  # prefix length shared with the last
        new = real & (np.arange(depth) >= shared[:, None])
        numbers = np.where(new, np.cumsum(new).reshape(new.shape) + 1, 0)
        node = np.maximum.accumulate(numbers, axis=0)  # a shared prefix: the node above
        parent = np.hstack([np.ones((len(pieces), 1), dtype=np.int64), node[:, :-1]])
        child, parent, char = node[new], parent[new], chars[new]
        has_children = np.bincount(parent, minlength=len(child) + 2) > 0
        has_children[:2] = True
        rank = np.empty(len(has_children), dtype=np.int64)
        rank[np.argsort(~has_children, kind="stable")] = np.arange(len(has_children))
        piece_at = np.full(len(has_children), -1, dtype=np.int64)
        ids = np.fromiter(map(self._pieces.__getitem__, pieces), dtype=np.int64)
        piece_at[rank[node[np.arange(len(pieces)), lengths - 1]]] = ids
        width, internal = len(alphabet) + 1, int(has_children.sum())
        keys, child = rank[parent] * width + char, rank[child]
        if internal * width <= DENSE_TRIE:  # one lookup per step
            transitions = np.zeros(internal * width, dtype=np.int64)
            transitions[keys] = child
        else:  # a large alphabet: sorted keys, searched
            order = np.argsort(keys)
            transitions = np.stack([keys[order], child[order]])
        return alphabet, width, transitions, internal, piece_at

    def _children(self, node: np.ndarray, char: np.ndarray) -> np.ndarray:
        """The node that each (node with children, character id) leads to, 0 for none."""
        _, width, transitions, _, _ = self._trie
        key = node * width + char
        if transitions.ndim == 1:  # dense
            return transitions[key]
        keys, children = transitions
        at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where(keys[at] == key, children[at], 0)

    # -- training

    @classmethod
    def _train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None,
        specials: list[str],
        max_piece_length: int = MAX_PIECE_LENGTH,
        seed_size: int = 1_000_000,
        shrinking_factor: float = 0.75,
        em_steps: int = 2,
    ) -> UnigramTokenizer:
        """Special tokens take the first ids, `<unk>` at 0 unless `specials` lists it, in
        which case its place there sets its id. The vocabulary can come out smaller than
        `vocab_size` on a corpus too small to fill it."""
        vocab_size = vocab_size or 8192
        block = list(dict.fromkeys(specials if UNK in specials else [UNK, *specials]))
        words = _count_words(texts, [s for s in block if s])
        if not words:
            raise LmforgeError("the corpus is empty: nothing to train the tokenizer on")
        chars = set().union(*words)
        target = vocab_size - len(block)
        if target < len(chars):
            raise LmforgeError(
                f"the corpus has {len(chars)} distinct characters, which with {len(block)} "
                f"special tokens need vocab_size >= {len(chars) + len(block)} (got {vocab_size})"
            )
        word_list = list(words)
        counts = np.array([words[w] for w in word_list], dtype=np.float64)
        lattices, index = _Lattices.of_words(word_list, max_piece_length)
        substrings = list(index)
        keep, freq = _seed(lattices, substrings, counts, seed_size)
        for special in block:  # cut out of the texts, but a piece must not shadow one
            if special in index:
                keep[index[special]] = False
        pieces = [substrings[i] for i in np.flatnonzero(keep)]
        is_char = np.array([len(p) == 1 for p in pieces])
        logp = np.log(freq[keep]) - math.log(freq[keep].sum())
        lattices = lattices.restrict(keep)
        del index, substrings

        def restrict(keep):
            nonlocal pieces, is_char, logp, lattices
            pieces = [p for p, k in zip(pieces, keep) if k]
            is_char, logp, lattices = is_char[keep], logp[keep], lattices.restrict(keep)

        def em(drop: bool = True):
            nonlocal logp
            for _ in range(em_steps):
                keep, new_logp = _m_step(lattices.expected_counts(logp, counts), is_char, drop)
                restrict(keep)
                logp = new_logp

        desired = int(target * 1.1)  # prune a little past the target, then keep the best
        while True:
            em()
            if len(pieces) <= desired:
                break
            size = max(desired, int(len(pieces) * shrinking_factor))
            restrict(_prune(pieces, logp, is_char, lattices, counts, size))
        best = np.argsort(-np.where(is_char, np.inf, logp), kind="stable")[:target]
        keep = np.zeros(len(pieces), dtype=bool)
        keep[best] = True
        restrict(keep)
        em(drop=False)
        ranked = sorted(zip(pieces, logp.tolist()), key=lambda ps: -ps[1])
        vocab = [(s, 0.0) for s in block] + ranked
        return cls(vocab, block.index(UNK), block)

    # -- encoding

    def _segment(self, words: Iterable[str]) -> None:
        """Put the best segmentation of each word (pre-token, without its '▁') not seen
        before in the cache: one at a time in Python for a few, all together in numpy for
        many."""
        cache = self._cache
        new = set(words).difference(cache)
        if len(cache) + len(new) > CACHE_SIZE:  # start over, keeping these words
            cache.clear()
            new = set(words)
        if len(new) >= BATCH_SEGMENTATION:
            cache.update(zip(new, self._best_paths([SPACE + w for w in new])))
            return
        for word in new:
            cache[word] = tuple(id for _, _, id in self._best_path(SPACE + word))

    def _best_path(self, word: str) -> list[tuple[int, int, int]]:
        """The best segmentation of one word as (start, end, id), <unk> runs fused."""
        return _fuse_unknown(_viterbi(self._word_lattice(word)), self.unk_id)

    def _best_paths(self, words: list[str], skip_whole: bool = False) -> list[tuple[int, ...]]:
        """The ids of each word's best segmentation (as `_best_path` finds it), for many
        words at once, longest first, in chunks that keep the score tables small: per word,
        Viterbi's has a cell per character position and the edge table one per (position,
        edge length), so a word of n characters costs about (n + 1) x (1 + min(n, max_len)).
        `skip_whole`: no word is its own piece (training asks how each piece would be
        segmented without it)."""
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        order = np.argsort(-lengths, kind="stable").tolist()
        segmentations: list[tuple[int, ...]] = [()] * len(words)
        lo = 0
        while lo < len(words):
            n = len(words[order[lo]])  # the chunk's longest word
            hi = lo + max(1, SCORE_TABLE // ((n + 1) * (1 + min(n, self._max_len))))
            chunk = order[lo:hi]
            best = self._best_paths_sorted([words[i] for i in chunk], skip_whole)
            for i, ids in zip(chunk, best):
                segmentations[i] = ids
            lo = hi
        return segmentations

    def _best_paths_sorted(
        self, words: list[str], skip_whole: bool = False
    ) -> list[tuple[int, ...]]:
        """`_best_paths` of words sorted longest first, so that the words at least k
        characters long are the first count[k].

        1. Walk the trie from every character of every word together, one character per
           step: each node with a piece is an edge (start, length, piece) of a lattice.
        2. Put each edge's score in a table by where it ends: the block of level k (the
           k-th character of each word) has count[k] rows and one column per length that
           can end there, longest first.
        3. Viterbi level by level: best[k, w] is the best over lengths L of best[k - L, w]
           plus the score of the edge, for all words at once; the first of equal totals
           (the earliest start) wins, as in `_best_path` and Hugging Face.
        4. Walk back from each word's end to read off its pieces."""
        alphabet, _, _, internal, piece_at = self._trie
        depth = self._max_len
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        n, longest = len(words), int(lengths[0])
        # The words one after another, each followed by a separator that leads nowhere.
        first = np.cumsum(lengths + 1) - lengths - 1
        code = np.frombuffer(("\0".join(words) + "\0").encode("utf-32-le"), dtype=np.uint32)
        at = np.searchsorted(alphabet, code)  # below the sentinel: always in range
        chars = np.where(alphabet[at] == code, at + 1, 0)
        chars[first + lengths] = 0
        start = np.arange(len(chars))
        node = np.ones_like(start)
        found = []  # (start, length, piece) of the piece occurrences
        for length in range(1, depth + 1):
            node = self._children(node, chars[start + length - 1])
            piece = piece_at[node]
            hit = piece >= 0
            found.append((start[hit], np.full(np.count_nonzero(hit), length), piece[hit]))
            if length == 1:  # characters that are no piece get an <unk> edge, scored last
                unknown = np.ones(len(chars), dtype=bool)
                unknown[start[hit]] = unknown[first + lengths] = False
                unknown = np.flatnonzero(unknown)
                found.append(
                    (unknown, np.ones_like(unknown), np.full_like(unknown, len(self.vocab)))
                )
            go = (node > 0) & (node < internal)
            start, node = start[go], node[go]
            if not start.size:
                break
        src, length, piece = (np.concatenate(parts) for parts in zip(*found))
        word = np.repeat(np.arange(n), lengths + 1)[src]
        if skip_whole:
            other = (src != first[word]) | (length != lengths[word])
            src, length, piece, word = src[other], length[other], piece[other], word[other]
        end = src - first[word] + length
        # 2. The edge table, a block per level.
        level = np.arange(longest + 1)
        count = np.searchsorted(-lengths, -level, side="right")  # words with >= k characters
        span = np.minimum(level, depth)  # the lengths of edges that can end at level k
        offset = np.concatenate([[0], np.cumsum(count * span)])  # level k's block starts here
        cell = offset[end] + word * span[end] + span[end] - length
        score = np.full(offset[-1], -np.inf)
        score[cell] = self._edge_scores[piece]
        pieces = np.empty(offset[-1], dtype=np.int64)
        pieces[cell] = piece
        # 3. Viterbi.
        best = np.zeros((longest + 1, n))
        back = np.zeros((longest + 1, n), dtype=np.int64)  # the length of the best last edge
        for k in range(1, longest + 1):
            c, m = int(count[k]), int(span[k])
            totals = best[k - m : k, :c].T + score[offset[k] : offset[k + 1]].reshape(c, m)
            choice = totals.argmax(axis=1)
            best[k, :c] = totals[np.arange(c), choice]
            back[k, :c] = m - choice
        # 4. The pieces, read from each word's end.
        words_at, ends, ids = [], [], []
        active, at_level = np.arange(n), lengths.copy()
        while active.size:
            k = at_level[active]
            last = back[k, active]
            words_at.append(active)
            ends.append(k)
            ids.append(pieces[offset[k] + active * span[k] + span[k] - last])
            at_level[active] = k - last
            active = active[k > last]
        words_at, ends, ids = np.concatenate(words_at), np.concatenate(ends), np.concatenate(ids)
        order = np.lexsort((ends, words_at))  # by word, then position
        ids = ids[order]
        unknown = ids == len(self.vocab)
        ids = np.where(unknown, self.unk_id, ids).tolist()
        bounds = np.cumsum(np.bincount(words_at, minlength=n)).tolist()
        has_unknown = np.bincount(words_at[order], unknown, minlength=n).tolist()
        segmentations, lo = [], 0
        for hi, fuse in zip(bounds, has_unknown):
            word_ids = ids[lo:hi]
            if fuse:  # rare: a run of <unk> is one token
                word_ids = [
                    i for i, j in zip(word_ids, [None, *word_ids]) if i != j or i != self.unk_id
                ]
            segmentations.append(tuple(word_ids))
            lo = hi
        return segmentations

    def _word_lattice(self, word: str):
        return _lattice(
            word, self._pieces, self._scores, self.unk_id, self._unk_score, self._max_len
        )

    def _encode_ordinary(self, text: str) -> list[int]:
        words = _bare_words(text)
        get = self._cache.__getitem__
        try:
            return list(chain.from_iterable(map(get, words)))
        except KeyError:  # words not seen before
            self._segment(words)
            return list(chain.from_iterable(map(get, words)))

    @without_cyclic_gc
    def encode_batch(
        self, texts: Iterable[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        texts = list(texts)
        # With a space in front of each text that metaspace puts a '▁' in front of, the
        # words of all texts are the parts of their concatenation after each space (and
        # '▁'), split in one call: a text of n spaces has the next n.
        spaced = [t if t[:1] in _NO_PREPEND else " " + t for t in texts]
        joined = "".join(spaced)
        pattern = self._specials_pattern  # a match across two texts only costs time
        if (add_special_tokens and self.template) or (pattern and pattern.search(joined)):
            return super().encode_batch(texts, add_special_tokens)
        if SPACE in joined:
            joined = joined.replace(SPACE, " ")
            spaced = [t.replace(SPACE, " ") for t in spaced]
        words = joined.split(" ")[1:]  # [0] is the empty part before the first space
        self._segment(words)  # all new words at once
        # All ids in one list, then each text's share of it.
        segmentations = list(map(self._cache.__getitem__, words))
        ids = list(chain.from_iterable(segmentations))
        ends = np.cumsum(np.fromiter(map(len, segmentations), dtype=np.int64, count=len(words)))
        n_words = np.fromiter(map(str.count, spaced, repeat(" ")), dtype=np.int64, count=len(texts))
        bounds = np.concatenate([[0], ends])[np.cumsum(n_words)].tolist()
        return [ids[lo:hi] for lo, hi in zip([0, *bounds], bounds)]

    def _encode_ordinary_offsets(self, text: str) -> tuple[list[int], list[Offset]]:
        ids: list[int] = []
        offsets: list[Offset] = []
        words = _bare_words(text)
        self._segment(words)
        at = -1 if text[:1] not in _NO_PREPEND else 0  # where the word's '▁' is; -1: put in front
        for word in words:
            word_ids = self._cache[word]
            if self.unk_id in word_ids:  # how many characters an <unk> covers: from the path
                ends = [end for _, end, _ in self._best_path(SPACE + word)]
            else:
                ends = list(accumulate(len(self.vocab[id][0]) for id in word_ids))
            start = 0
            for id, end in zip(word_ids, ends):
                ids.append(id)
                # The prepended '▁' stands where the first character is, as in HF.
                offsets.append((max(at + start, 0), max(at + end, 1)))
                start = end
            at += len(word) + 1
        return ids, offsets

    def sample(self, text: str, alpha: float = 0.1, seed: int | None = None) -> list[int]:
        """Ids of one segmentation drawn with probability proportional to P^alpha (subword
        regularisation): alpha near 0 is nearly uniform, large alpha approaches `encode`.
        Special tokens are kept whole; no template tokens are added."""
        if alpha <= 0:
            raise LmforgeError(f"sampling alpha must be positive, got {alpha}")
        rng = random.Random(seed)
        ids: list[int] = []
        for part in self.split_specials(text):
            if isinstance(part, int):
                ids.append(part)
                continue
            for word in _words(part):
                path = _sample(self._word_lattice(word), alpha, rng)
                ids.extend(id for _, _, id in _fuse_unknown(path, self.unk_id))
        return ids

    # -- decoding and vocabulary

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        tokens = [
            self.vocab[i][0]
            for i in ids
            if 0 <= i < len(self.vocab) and not (skip_special_tokens and i in self._special_ids)
        ]
        if tokens and tokens[0].startswith(SPACE):  # the '▁' encoding put in front
            tokens[0] = tokens[0][1:]
        return "".join(tokens).replace(SPACE, " ")

    def token_to_id(self, token: str) -> int | None:
        return self.index.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self.vocab[id][0] if 0 <= id < len(self.vocab) else None

    def score(self, id: int) -> float:
        """The piece's log-probability."""
        return self._scores[id]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> list[str]:
        return [*self.specials, self.unk_token]

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each token stands for: '▁' is one space; <unk> at least one byte."""
        sizes = [len(p.replace(SPACE, " ").encode("utf-8")) for p, _ in self.vocab]
        for i in self._special_ids:
            sizes[i] = 0
        sizes[self.unk_id] = 1
        return sizes

    # -- formats

    def to_spec(self) -> dict:
        return self._hf_spec(
            sorted(self.special_tokens, key=self.index.__getitem__),
            pre_tokenizer=dict(_METASPACE),
            post_processor=self.template.to_spec(self.token_to_id) if self.template else None,
            decoder=dict(_METASPACE),
            model={
                "type": "Unigram",
                "unk_id": self.unk_id,
                "vocab": [[piece, score] for piece, score in self.vocab],
                "byte_fallback": False,
            },
        )

    @classmethod
    def _recognises(cls, spec: dict) -> bool:
        return (spec.get("model") or {}).get("type") == "Unigram"

    @classmethod
    def _from_spec(cls, spec: dict) -> UnigramTokenizer:
        model = spec["model"]
        pre = spec.get("pre_tokenizer") or {}
        prepends = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space") else None)
        if (
            spec.get("normalizer")
            or pre.get("type") != "Metaspace"
            or pre.get("replacement") != SPACE
            or prepends != "always"
            or not pre.get("split", True)
        ):
            raise LmforgeError(
                "only Unigram tokenizers without a normalizer and with a Metaspace "
                "pre-tokenizer (replacement '▁', prepend_scheme 'always', split) are supported"
            )
        if model.get("byte_fallback"):
            raise LmforgeError("Unigram byte_fallback is not supported by lmforge")
        if model.get("unk_id") is None:
            raise LmforgeError("this Unigram tokenizer has no unk_id; lmforge needs one")
        vocab = [(piece, float(score)) for piece, score in model["vocab"]]
        specials = []
        for token in spec.get("added_tokens", []):
            if token["id"] == len(vocab):  # an added token beyond the model's vocabulary
                vocab.append((token["content"], 0.0))
            elif token["id"] > len(vocab) or vocab[token["id"]][0] != token["content"]:
                raise LmforgeError(f"added token {token['content']!r} does not match its id")
            if token.get("special"):
                specials.append(token["content"])
        tok = cls(vocab, model["unk_id"], specials)
        tok.template = Template.from_spec(spec.get("post_processor"))
        pad = (spec.get("padding") or {}).get("pad_token")
        if pad in tok.index:
            tok.pad_token = pad
        return tok
