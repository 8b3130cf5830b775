"""WordPiece and Unigram: lmforge vs the references, trained at 8192 on the built-in corpus.

WordPiece vs Hugging Face `tokenizers`' WordPieceTrainer (whole plays); Unigram vs
`sentencepiece` (one thread) on the plays' lines, as sentencepiece reads lines. Reports
training time, held-out bytes per token, and single-thread encoding speed of our trained
vocabulary in lmforge vs Hugging Face `tokenizers` loading the same tokenizer.json (ids must
match). With --memory, also each Unigram trainer's peak memory, in a fresh process each.
Prints a table, then one JSON line.  Run:  python benchmarks/tokenizers_train.py [--memory]
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import sentencepiece as spm  # noqa: E402

import tokenizers as hf  # noqa: E402
from lmforge.text import load_shakespeare  # noqa: E402
from lmforge.tokenizers import Tokenizer  # noqa: E402
from tokenizers import models, normalizers, pre_tokenizers, trainers  # noqa: E402

VOCAB = 8192


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def best_of(fn, repeat: int = 3):
    """The fastest of `repeat` runs (the least disturbed by other work) and its result."""
    return min((timed(fn) for _ in range(repeat)), key=lambda r: r[0])


def encode_speed(ours: Tokenizer, texts: list[str]) -> tuple[float, float, bool]:
    """MB/s of lmforge and of HF tokenizers, each encoding the batch single-threaded with
    a cold cache, on the same saved vocabulary; ids equal?"""
    folder = tempfile.mkdtemp()
    ours.save(folder)
    n = sum(len(t.encode()) for t in texts)
    ours_s, ours_ids = best_of(
        lambda: Tokenizer.load(folder).encode_batch(texts, add_special_tokens=False)
    )
    ref_s, ref = best_of(
        lambda: hf.Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode_batch(
            texts, add_special_tokens=False
        )
    )
    return n / ours_s / 1e6, n / ref_s / 1e6, ours_ids == [e.ids for e in ref]


def train_sentencepiece(lines: list[str]) -> bytes:
    """sentencepiece's Unigram on the same lines and settings as ours; the model proto."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=VOCAB,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        split_by_unicode_script=False,
        split_by_number=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def peak_rss_kib() -> int:
    """This process's peak resident memory (Linux VmHWM; unlike ru_maxrss, a spawned
    process does not inherit its parent's)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def training_peak_mib(which: str, lines: list[str]) -> float:
    """How far Unigram training raises a process's peak memory (run in a fresh process)."""
    before = peak_rss_kib()
    if which == "lmforge":
        Tokenizer.train(lines, "unigram", VOCAB, special_tokens=[])
    else:
        train_sentencepiece(lines)
    return (peak_rss_kib() - before) / 1024


def memory(lines: list[str]) -> dict:
    """Peak memory of each Unigram trainer, each in a process of its own."""
    context = multiprocessing.get_context("spawn")
    peaks = {}
    for which in ("lmforge", "sentencepiece"):
        with context.Pool(1) as pool:
            peaks[which] = pool.apply(training_peak_mib, (which, lines))
    return peaks


def main() -> int:
    with_memory = "--memory" in sys.argv[1:]
    train_docs, valid_docs = load_shakespeare()
    train = [d.text for d in train_docs]
    held_out = "".join(d.text for d in valid_docs)
    hb = len(held_out.encode())
    results = {}

    # WordPiece
    wp_s, wp = timed(lambda: Tokenizer.train(train, "wordpiece", VOCAB))

    def hf_wordpiece():
        tok = hf.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=VOCAB,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            show_progress=False,
        )
        tok.train_from_iterator(train, trainer)
        return tok

    hf_wp_s, hf_wp = timed(hf_wordpiece)
    wp_mb, wp_ref_mb, wp_match = encode_speed(wp, [d.text for d in valid_docs])
    results["wordpiece"] = {
        "train_s": wp_s,
        "ref_train_s": hf_wp_s,
        "heldout_bytes_per_token": hb / len(wp.encode(held_out, add_special_tokens=False)),
        "ref_heldout_bytes_per_token": hb
        / len(hf_wp.encode(held_out, add_special_tokens=False).ids),
        "encode_mb_s": wp_mb,
        "hf_encode_mb_s": wp_ref_mb,
        "ids_match_hf": wp_match,
        "reference": "HF tokenizers WordPieceTrainer",
    }

    # Unigram, on lines
    lines = [ln for t in train for ln in t.split("\n") if ln]
    held_lines = [ln for d in valid_docs for ln in d.text.split("\n") if ln]
    lb = sum(len(ln.encode()) for ln in held_lines)
    ug_s, ug = timed(lambda: Tokenizer.train(lines, "unigram", VOCAB, special_tokens=[]))
    sp_s, model = timed(lambda: train_sentencepiece(lines))
    sp = spm.SentencePieceProcessor(model_proto=model)
    sp_enc_s, _ = timed(lambda: sp.encode(held_lines))
    ug_mb, ug_ref_mb, ug_match = encode_speed(ug, held_lines)
    results["unigram"] = {
        "train_s": ug_s,
        "ref_train_s": sp_s,
        "heldout_bytes_per_token": lb / sum(len(ug.encode(ln)) for ln in held_lines),
        "ref_heldout_bytes_per_token": lb / sum(len(ids) for ids in sp.encode(held_lines)),
        "encode_mb_s": ug_mb,
        "hf_encode_mb_s": ug_ref_mb,
        "sentencepiece_encode_mb_s": lb / sp_enc_s / 1e6,
        "ids_match_hf": ug_match,
        "reference": "sentencepiece (1 thread), lines",
    }
    if with_memory:
        results["unigram"]["training_peak_mib"] = memory(lines)

    print(
        f"{'':12}{'train s':>10}{'ref s':>8}{'ratio':>7}{'B/tok':>8}{'ref':>7}"
        f"{'enc MB/s':>10}{'HF MB/s':>9}{'ids ok':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:12}{r['train_s']:10.2f}{r['ref_train_s']:8.2f}"
            f"{r['train_s'] / r['ref_train_s']:7.2f}{r['heldout_bytes_per_token']:8.3f}"
            f"{r['ref_heldout_bytes_per_token']:7.3f}{r['encode_mb_s']:10.2f}"
            f"{r['hf_encode_mb_s']:9.2f}{r['ids_match_hf']!s:>8}"
        )
    print(f"sentencepiece encode: {results['unigram']['sentencepiece_encode_mb_s']:.2f} MB/s")
    if with_memory:
        peaks = results["unigram"]["training_peak_mib"]
        print(f"Unigram training, peak memory added: lmforge {peaks['lmforge']:.0f} MiB, "
              f"sentencepiece {peaks['sentencepiece']:.0f} MiB")  # fmt: skip
    print(json.dumps({"benchmark": "tokenizers_train", "vocab_size": VOCAB, **results}))
    return 0 if all(r["ids_match_hf"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
