"""MinHash, LSH and union-find against exact Jaccard, the S-curve formula and datasketch."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from lmforge.text.clean.minhash import (
    LSHIndex,
    MinHasher,
    Shingler,
    UnionFind,
    candidate_pairs,
    candidate_probability,
    estimate_jaccard,
    hash64,
    jaccard,
    near_duplicate_clusters,
    optimal_bands,
    word_shingles,
)


def pair_with_jaccard(rng: random.Random, size: int, j: float, tag: str):
    """Two sets of `size` shingles sharing k, so that J = k / (2 size - k) is close to j."""
    k = round(2 * size * j / (1 + j))
    common = [f"{tag}c{i}" for i in range(k)]
    a = common + [f"{tag}a{i}" for i in range(size - k)]
    b = common + [f"{tag}b{i}" for i in range(size - k)]
    rng.shuffle(a)
    return a, b


def hashes_of(shingles):
    return np.array([hash64(s.encode()) for s in shingles], dtype=np.uint64)


def datasketch_minhash(shingles, num_perm):
    m = MinHash(num_perm=num_perm, seed=7)
    m.update_batch([s.encode() for s in shingles])
    return m


def test_estimates_within_the_theoretical_bound_and_agree_with_datasketch():
    """est = (matches)/P is Binomial(P, J)/P: Hoeffding gives P(|est - J| >= eps) <=
    2 exp(-2 P eps^2). eps = 0.13 at P = 256 makes that 3e-4 per pair; over all pairs the
    squared error must also average J(1-J)/P (a chi-square bound: within a factor 2)."""
    num_perm, eps = 256, 0.13
    rng = random.Random(0)
    hasher = MinHasher(num_perm, seed=3)
    ours_err, ds_err, expected = [], [], []
    for t, j in enumerate([0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0] * 4):
        a, b = pair_with_jaccard(rng, 150, j, f"p{t}")
        exact = jaccard(a, b)
        sa, sb = hasher.signatures([hashes_of(a), hashes_of(b)])
        ours = estimate_jaccard(sa, sb)
        ds = datasketch_minhash(a, num_perm).jaccard(datasketch_minhash(b, num_perm))
        assert abs(ours - exact) < eps, (j, exact, ours)
        assert abs(ds - exact) < eps, (j, exact, ds)
        assert abs(ours - ds) < 2 * eps
        ours_err.append((ours - exact) ** 2)
        ds_err.append((ds - exact) ** 2)
        expected.append(exact * (1 - exact) / num_perm)
    assert 0.5 * sum(expected) < sum(ours_err) < 2 * sum(expected)
    assert 0.5 * sum(expected) < sum(ds_err) < 2 * sum(expected)


def test_signature_is_the_minimum_of_each_function_even_for_a_huge_document():
    hasher = MinHasher(16, seed=5)
    x = np.random.default_rng(0).integers(0, 2**64, size=20000, dtype=np.uint64)
    with np.errstate(over="ignore"):
        direct = ((x[:, None] * hasher.a + hasher.b) >> np.uint64(32)).min(axis=0)
    sigs = hasher.signatures([x[:5], x, np.array([], dtype=np.uint64), x[5:9]])
    assert np.array_equal(sigs[1], direct.astype(np.uint32))  # spans several blocks
    assert (sigs[2] == 0xFFFFFFFF).all()
    assert not np.array_equal(sigs[0], sigs[3])


def test_word_shingle_hashes_follow_the_shingle_set():
    """Equal n-gram sets give equal hash sets; the numpy n-gram hash has no collisions on
    a few thousand shingles."""
    sh = Shingler(3)
    text = "the cat sat on the mat and the cat sat on the hat " * 3
    assert len(set(sh.hashes(text).tolist())) == len(set(word_shingles(text, 3)))
    assert set(sh.hashes("A b C d").tolist()) == set(sh.hashes("a  B c, d!").tolist())
    assert len(sh.hashes("two words")) == 1  # shorter than n: one shingle
    assert len(sh.hashes("")) == 0
    vocab = [f"w{i}" for i in range(300)]
    rng = random.Random(1)
    doc = " ".join(rng.choice(vocab) for _ in range(5000))
    assert len(set(Shingler(5).hashes(doc).tolist())) == len(set(word_shingles(doc, 5)))


def test_optimal_bands_match_datasketch():
    for threshold, num_perm in [(0.8, 128), (0.7, 256), (0.5, 64), (0.9, 100)]:
        assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_candidate_probability_follows_the_s_curve():
    """For pairs of known Jaccard, the share that become LSH candidates is the S-curve
    1 - (1 - J^r)^b, within 4 binomial standard deviations."""
    bands, rows, num_perm, trials = 8, 6, 48, 300
    rng = random.Random(2)
    hasher = MinHasher(num_perm, seed=11)
    for j in (0.4, 0.6, 0.75, 0.9):
        lists = []
        for t in range(trials):
            a, b = pair_with_jaccard(rng, 60, j, f"s{j}-{t}")
            lists += [hashes_of(a), hashes_of(b)]
        sig = hasher.signatures(lists)
        pairs = candidate_pairs(sig, bands, rows)
        hits = sum((2 * t, 2 * t + 1) in pairs for t in range(trials))
        exact = jaccard(*pair_with_jaccard(random.Random(0), 60, j, "x"))
        p = float(candidate_probability(exact, bands, rows))
        sd = math.sqrt(p * (1 - p) / trials)
        assert abs(hits / trials - p) < 4 * sd + 1e-9, (j, hits / trials, p)


def test_our_banding_finds_exactly_datasketchs_candidates_on_its_signatures():
    bands, rows, num_perm = 16, 4, 64
    rng = random.Random(3)
    sets = []
    for t in range(40):
        a, b = pair_with_jaccard(rng, 40, rng.choice([0.2, 0.5, 0.7, 0.9]), f"d{t}")
        sets += [a, b]
    mh = [datasketch_minhash(s, num_perm) for s in sets]
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    for i, m in enumerate(mh):
        lsh.insert(i, m)
    theirs = {(min(i, k), max(i, k)) for i, m in enumerate(mh) for k in lsh.query(m) if k != i}
    sig = np.stack([m.hashvalues for m in mh]).astype(np.uint32)
    ours = candidate_pairs(sig, bands, rows)
    assert ours == theirs and len(ours) > 20
    # the index without verification joins exactly the connected components of those pairs
    index = LSHIndex(num_perm, bands, rows, threshold=0.5, verify=False)
    index.add(sig)
    ref = UnionFind()
    for _ in sets:
        ref.add()
    for i, k in theirs:
        ref.union(i, k)
    assert [index.uf.find(i) for i in range(len(sets))] == [ref.find(i) for i in range(len(sets))]


def test_union_find_keeps_the_smallest_id_per_cluster():
    uf = UnionFind()
    for _ in range(6):
        uf.add()
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(1, 3)
    assert [uf.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]
    assert uf.clusters() == {0: [0], 1: [1, 3], 2: [2, 4, 5]}
    assert not uf.union(2, 5)


def edit(rng: random.Random, tokens: list[str], rate: float, vocab: list[str]) -> list[str]:
    """Substitute, delete or insert a word at each position with total probability `rate`."""
    out = []
    for tok in tokens:
        u = rng.random()
        if u < rate / 3:
            out.append(rng.choice(vocab))
        elif u < 2 * rate / 3:
            continue
        elif u < rate:
            out += [tok, rng.choice(vocab)]
        else:
            out.append(tok)
    return out


def test_synthetic_near_duplicates_found_with_precision_and_recall_above_095():
    """Base documents, each with one copy edited at a controlled rate (0 to 30% of words).
    Truth: exact Jaccard of the word 5-gram sets >= the threshold. Every pair of documents
    is judged by the clusters, so false positives between unrelated documents count too."""
    threshold = 0.8
    rng = random.Random(4)
    vocab = [f"v{i}" for i in range(5000)]
    docs = []
    for _ in range(150):
        tokens = [rng.choice(vocab) for _ in range(rng.randint(150, 400))]
        docs.append(tokens)
        docs.append(edit(rng, tokens, rng.choice([0.0, 0.005, 0.01, 0.02, 0.04, 0.1, 0.3]), vocab))
    texts = [" ".join(d) for d in docs]
    shingles = [set(word_shingles(t, 5)) for t in texts]
    pairs = range(0, len(texts), 2)
    truth = {(i, i + 1) for i in pairs if jaccard(*shingles[i : i + 2]) >= threshold}
    index = near_duplicate_clusters(texts, threshold=threshold, num_perm=128, ngram=5)
    clusters = [c for c in index.uf.clusters().values() if len(c) > 1]
    found = {(c[x], c[y]) for c in clusters for x in range(len(c)) for y in range(x + 1, len(c))}
    tp = len(found & truth)
    precision, recall = tp / max(1, len(found)), tp / len(truth)
    print(f"precision {precision:.3f} recall {recall:.3f} over {len(truth)} true pairs")
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, len(truth))
    assert 30 < len(truth) < 140  # both sides of the threshold are represented


def test_bad_settings_are_refused():
    from lmforge.errors import LmforgeError

    with pytest.raises(LmforgeError, match="exceeds num_perm"):
        LSHIndex(64, 10, 10, 0.8)
    with pytest.raises(LmforgeError, match="strictly between"):
        optimal_bands(1.0, 64)
    with pytest.raises(LmforgeError, match="unit"):
        Shingler(5, "byte")
