"""Byte-level BPE: lmforge vs Hugging Face `tokenizers` (and tiktoken) on the built-in corpus.

Trains an 8192-token BPE with both on the training plays, then encodes every play with each
(single process / single thread, both through `encode_batch`, cold caches: lmforge's tokenizer
is reloaded from disk).
A speed figure counts only if the ids match the reference, which the script checks.
Prints a table, then one JSON line.  Run:  python benchmarks/tokenizers_bpe.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # HF tokenizers: single thread, set before import
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import tokenizers as hf  # noqa: E402
from lmforge.text import load_shakespeare  # noqa: E402
from lmforge.tokenizers import Tokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

VOCAB = 8192


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> int:
    train, valid = load_shakespeare()
    train_texts = [d.text for d in train]
    all_texts = train_texts + [d.text for d in valid]
    n_bytes = sum(len(t.encode()) for t in all_texts)

    ours_train_s, ours = best_of(lambda: Tokenizer.train(train_texts, "bpe", VOCAB), repeat=2)

    def hf_train():
        tok = hf.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(train_texts, trainer)
        return tok

    hf_train_s, hf_trained = best_of(hf_train, repeat=2)

    folder = tempfile.mkdtemp()
    ours.save(folder)
    reference = hf.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    encoding = ours.to_tiktoken()

    def ours_encode():
        fresh = Tokenizer.load(folder)  # cold cache: nothing learned from training
        return fresh.encode_batch(all_texts)  # the same call as HF's below

    ours_s, ours_ids = best_of(ours_encode)
    hf_s, hf_ids = best_of(lambda: [e.ids for e in reference.encode_batch(all_texts)])
    tt_s, tt_ids = best_of(lambda: [encoding.encode_ordinary(t) for t in all_texts])
    # The same text as ~190k short inputs (one per line): per-call overhead counts here.
    lines = [line for t in all_texts for line in t.splitlines(keepends=True)]

    def ours_lines():
        return Tokenizer.load(folder).encode_batch(lines)

    ours_lines_s, ours_line_ids = best_of(ours_lines)
    hf_lines_s, hf_line_ids = best_of(lambda: [e.ids for e in reference.encode_batch(lines)])
    match_hf = ours_ids == hf_ids and ours_line_ids == hf_line_ids
    match_tt = ours_ids == tt_ids

    held_out = "".join(d.text for d in valid)
    hb = len(held_out.encode())
    ours_bpt = hb / len(ours.encode(held_out))
    hf_bpt = hb / len(hf_trained.encode(held_out).ids)

    rows = [
        ("train 8192 (s)", ours_train_s, hf_train_s, ours_train_s / hf_train_s),
        ("encode MB/s, plays", n_bytes / ours_s / 1e6, n_bytes / hf_s / 1e6, hf_s / ours_s),
        (
            "encode MB/s, lines",
            n_bytes / ours_lines_s / 1e6,
            n_bytes / hf_lines_s / 1e6,
            hf_lines_s / ours_lines_s,
        ),
        ("held-out bytes/token", ours_bpt, hf_bpt, ours_bpt / hf_bpt),
    ]
    print(f"{'':24}{'lmforge':>12}{'HF tokenizers':>16}{'ratio':>10}")
    for name, a, b, r in rows:
        print(f"{name:24}{a:12.3f}{b:16.3f}{r:10.2f}")
    print(f"{'tiktoken encode MB/s':24}{n_bytes / tt_s / 1e6:12.3f}  (export of the lmforge vocab)")
    print(f"ids equal to HF: {match_hf}; to tiktoken: {match_tt}; corpus {n_bytes / 1e6:.2f} MB")
    print(
        json.dumps(
            {
                "benchmark": "tokenizers_bpe",
                "vocab_size": VOCAB,
                "train_s": ours_train_s,
                "hf_train_s": hf_train_s,
                "train_time_ratio": ours_train_s / hf_train_s,
                "encode_mb_s": n_bytes / ours_s / 1e6,
                "hf_encode_mb_s": n_bytes / hf_s / 1e6,
                "tiktoken_encode_mb_s": n_bytes / tt_s / 1e6,
                "encode_speedup_vs_hf": hf_s / ours_s,
                "encode_lines_mb_s": n_bytes / ours_lines_s / 1e6,
                "hf_encode_lines_mb_s": n_bytes / hf_lines_s / 1e6,
                "encode_lines_speedup_vs_hf": hf_lines_s / ours_lines_s,
                "heldout_bytes_per_token": ours_bpt,
                "hf_heldout_bytes_per_token": hf_bpt,
                "ids_match_hf": match_hf,
                "ids_match_tiktoken": match_tt,
            }
        )
    )
    return 0 if match_hf and match_tt else 1


if __name__ == "__main__":
    sys.exit(main())
