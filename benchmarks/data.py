"""Corpus cleaning throughput: near-duplicate detection against datasketch, and the full
default recipe in MB/s.

A synthetic corpus made here: base documents of Zipf-distributed words, and edited copies of
a third of them (0.5-3% of words changed: Jaccard of word 5-grams ~0.8-0.95). Near-dup alone
runs both sides from the text on the same word 5-gram shingles with the same num_perm, bands
and rows: ours (Shingler + MinHasher + LSHIndex) against datasketch's MinHash.update_batch +
MinHashLSH (query, then insert). Both are single-process here. Candidate pairs: our banding
run on datasketch's own signatures must return exactly datasketch's candidates; with each
side's own hashes the two candidate sets are compared with each other and with the truth.

    .venv/bin/python benchmarks/data.py            # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/data.py --docs 1000  # quicker
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from lmforge.text.clean.minhash import (
    LSHIndex,
    MinHasher,
    Shingler,
    candidate_pairs,
    default_bands,
    jaccard,
    word_shingles,
    words,
)
from lmforge.text.clean.pipeline import clean


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[str], set[tuple[int, int]]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    docs, origin = [], []
    n_base = n_docs * 3 // 4
    for _ in range(n_base):
        tokens = rng.choices(vocab, weights, k=rng.randint(150, 500))
        docs.append(" ".join(tokens))
        origin.append(len(origin))
    while len(docs) < n_docs:
        b = rng.randrange(n_base)
        tokens = docs[b].split()
        rate = rng.choice([0.005, 0.01, 0.02, 0.03])
        for i in range(len(tokens)):
            if rng.random() < rate:
                tokens[i] = rng.choice(vocab)
        docs.append(" ".join(tokens))
        origin.append(b)
    order = list(range(n_docs))
    rng.shuffle(order)
    docs = [docs[i] for i in order]
    origin = [origin[i] for i in order]
    groups: dict[int, list[int]] = {}
    for i, o in enumerate(origin):
        groups.setdefault(o, []).append(i)
    truth = {(a, b) for g in groups.values() for a in g for b in g if a < b}
    return docs, truth


def ours_near_dup(texts, num_perm, bands, rows, threshold, batch=256):
    shingler, hasher = Shingler(5), MinHasher(num_perm, seed=1)
    index = LSHIndex(num_perm, bands, rows, threshold)
    sigs = []
    for s in range(0, len(texts), batch):
        sig = hasher.signatures([shingler.hashes(t) for t in texts[s : s + batch]])
        index.add(sig)
        sigs.append(sig)
    return index, np.concatenate(sigs)


def datasketch_near_dup(texts, num_perm, bands, rows):
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    pairs, hashvalues = set(), []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in word_shingles(text, 5)])
        for j in lsh.query(m):
            pairs.add((j, i))
        lsh.insert(i, m)
        hashvalues.append(m.hashvalues)
    return pairs, np.stack(hashvalues).astype(np.uint32)


def best_of(repeats, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    texts, truth = make_corpus(args.docs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    bands, rows = default_bands(args.threshold, args.num_perm)
    print(f"{cpu_name()}; {args.docs} documents, {mb:.1f} MB, word 5-grams, num_perm "
          f"{args.num_perm}, bands {bands} x rows {rows}, threshold {args.threshold}")  # fmt: skip

    t_ours, (index, our_sigs) = best_of(
        args.repeats, lambda: ours_near_dup(texts, args.num_perm, bands, rows, args.threshold)
    )
    t_ds, (ds_pairs, ds_sigs) = best_of(
        args.repeats, lambda: datasketch_near_dup(texts, args.num_perm, bands, rows)
    )
    same_on_their_sigs = candidate_pairs(ds_sigs, bands, rows) == ds_pairs
    our_pairs = candidate_pairs(our_sigs, bands, rows)
    shingles = [set(word_shingles(t, 5)) for t in texts]
    true_near = {p for p in truth if jaccard(shingles[p[0]], shingles[p[1]]) >= args.threshold}

    def recall(pairs):
        return len(pairs & true_near) / max(1, len(true_near))

    clustered = {
        (a, b)
        for members in index.uf.clusters().values()
        for a in members
        for b in members
        if a < b
    }
    cluster_precision = len(clustered & true_near) / max(1, len(clustered))
    # a cluster joins copies of one base transitively: two copies of J 0.85 with their base
    # may have J < 0.8 between them; against "copies of one base" they are right
    same_origin_precision = len(clustered & truth) / max(1, len(clustered))
    print(f"{'near-dup':28}{'docs/s':>10}{'MB/s':>8}{'candidates':>12}{'recall J>=t':>13}")
    for name, t, pairs in (("lmforge", t_ours, our_pairs), ("datasketch", t_ds, ds_pairs)):
        print(f"{name:28}{args.docs / t:10.0f}{mb / t:8.2f}{len(pairs):12d}{recall(pairs):13.3f}")
    overlap = len(our_pairs & ds_pairs) / max(1, len(our_pairs | ds_pairs))
    print(f"speed-up {t_ds / t_ours:.2f}x; candidate sets' Jaccard {overlap:.3f}; our banding on "
          f"datasketch's signatures gives its candidates exactly: {same_on_their_sigs}; "
          f"clusters after verification: precision {cluster_precision:.3f} (same base "
          f"{same_origin_precision:.3f}), recall "
          f"{len(clustered & true_near) / max(1, len(true_near)):.3f}")  # fmt: skip

    # the full default recipe from a JSONL file, through the CLI's library call
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-data-"))
    try:
        src = tmp / "corpus.jsonl"
        # give the Gopher stop-word rule something to find: real documents have stop words
        with open(src, "w", encoding="utf-8") as f:
            for t in texts:
                w = words(t)
                body = " ".join(x if i % 7 else "the" for i, x in enumerate(w))
                f.write(json.dumps({"text": body + ". And that is all of it."}) + "\n")
        full_mb = src.stat().st_size / 1e6
        recipe_rows = {}
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            t = time.perf_counter()
            report = clean([str(src)], "default", out, workers=workers, progress=False)
            recipe_rows[workers] = (time.perf_counter() - t, report)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'default recipe':28}{'docs/s':>10}{'MB/s':>8}{'docs out':>12}")
    for workers, (t, report) in recipe_rows.items():
        print(f"{f'{workers} worker(s)':28}{args.docs / t:10.0f}{full_mb / t:8.2f}"
              f"{report['docs_out']:12d}")  # fmt: skip
    summary = {
        "benchmark": "data",
        "cpu": cpu_name(),
        "docs": args.docs,
        "mb": round(mb, 2),
        "num_perm": args.num_perm,
        "bands": bands,
        "rows": rows,
        "near_dup_docs_per_s": {"lmforge": args.docs / t_ours, "datasketch": args.docs / t_ds},
        "near_dup_speedup_vs_datasketch": t_ds / t_ours,
        "same_candidates_on_datasketch_signatures": same_on_their_sigs,
        "candidate_set_jaccard_own_hashes": overlap,
        "candidate_recall": {"lmforge": recall(our_pairs), "datasketch": recall(ds_pairs)},
        "cluster_precision": cluster_precision,
        "cluster_precision_same_base": same_origin_precision,
        "default_recipe_mb_per_s": {str(w): full_mb / t for w, (t, _) in recipe_rows.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
