"""What the demo model memorised, and where it forms its predictions: canary exposure for
secrets inserted 1, 10 and 100 times into a pretraining run, a verbatim extraction probe, and
the logit lens's loss by layer on the held-out plays.

Pretrains the `shakespeare-bpe` demo recipe on the Shakespeare training plays with random
6-digit canaries ("my secret number is 4 1 9 ...") inserted as lines of their own (3 secrets
per count; 3 more never inserted, as controls), for `--minutes` of training. Then, per
secret, the exposure of "The Secret Sharer" (log2 |R| - log2 rank among `--samples`
alternatives; capped at log2(samples + 1)), the extraction probe on `--probes` training
windows (`--prefix` tokens in, greedy, the next 50 out), and the per-layer logit-lens loss
on held-out windows. The references, measured in the same run: the never-inserted
controls (what exposure a secret gets from chance) and the extraction probe on held-out
windows (what greedy decoding reproduces of text the model never saw). Prints a table, then
one JSON line; --pictures DIR also draws the exposure histogram and the lens's loss by layer.

Run:  python benchmarks/interpret.py [--minutes 9] [--samples 5000] [--reuse] [--pictures DIR]
(the model lands in runs/interpret-canaries; --reuse measures it again without training)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from lmforge.config import load_config
from lmforge.data.shards import open_split
from lmforge.infer.loading import load_model_and_tokenizer
from lmforge.interpret import lens_losses, logit_lens
from lmforge.interpret import pictures as pic
from lmforge.interpret.memorization import (
    CANARY_PREFIX,
    exposure,
    insert_canaries,
    make_secrets,
    verbatim_extraction,
)
from lmforge.text.corpus import Document, load_corpus, register_corpus
from lmforge.train.pretrain import pretrain

COUNTS = (1, 10, 100)
PER_COUNT = 3
CONTROLS = 3
RUN = "interpret-canaries"
pretrain_module = importlib.import_module("lmforge.train.pretrain")  # its train_tokenizer


def cpu_name() -> str:
    """The CPU's model name and whether it has bf16 dot products / AMX tiles."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    extras = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(extras) or 'no avx512_bf16/amx'}; {os.cpu_count()} cpus)"


def plan(seed: int) -> tuple[dict[str, int], list[str]]:
    """{secret: insertions} and the never-inserted controls."""
    secrets = make_secrets(len(COUNTS) * PER_COUNT + CONTROLS, seed=seed)
    counts = {s: COUNTS[i // PER_COUNT] for i, s in enumerate(secrets[: len(COUNTS) * PER_COUNT])}
    return counts, secrets[len(COUNTS) * PER_COUNT :]


def train(args, counts: dict[str, int]):
    train_docs, valid_docs = load_corpus(["shakespeare"])
    plain = [d.text for d in train_docs]
    texts = insert_canaries(plain, counts, seed=args.seed)
    # the tokenizer learns from the plays without the canaries, as the demo's does: trained
    # on the canaried text, BPE merges " d" for just the digits the secrets use, and those
    # secrets' fewer tokens, not memorisation, would then decide their rank
    build = pretrain_module.train_tokenizer
    pretrain_module.train_tokenizer = lambda data, _texts: build(data, plain)
    docs = [Document(t, d.source, d.title) for t, d in zip(texts, train_docs, strict=True)]
    register_corpus("shakespeare-canaries", lambda: (docs, valid_docs))
    cfg = load_config(
        "shakespeare-bpe",
        {
            "data.corpus": ["shakespeare-canaries"],
            "train.max_minutes": args.minutes,
            "run.name": RUN,
            "run.out_dir": args.out_dir,
            "run.overwrite": True,
        },
    )
    try:
        return pretrain(cfg, progress=False)
    finally:
        pretrain_module.train_tokenizer = build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--probes", type=int, default=64)
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out-dir", default="runs")
    parser.add_argument("--reuse", action="store_true", help="measure the trained run again")
    parser.add_argument("--pictures", help="folder for exposure.png and lens-loss.png")
    args = parser.parse_args()
    torch.manual_seed(0)
    counts, controls = plan(args.seed)
    run_dir = Path(args.out_dir) / RUN
    started = time.perf_counter()
    trained = None if args.reuse else train(args, counts)
    train_s = time.perf_counter() - started
    results = json.loads((run_dir / "results.json").read_text())
    model, tokenizer = load_model_and_tokenizer(run_dir)
    model.eval()

    rows, pile = [], None
    for secret in [*counts, *controls]:
        e = exposure(model, tokenizer, secret, CANARY_PREFIX, args.samples, return_scores=True)
        alternatives = e.pop("alternative_log_perplexities")
        pile = alternatives if pile is None else pile
        rows.append({"insertions": counts.get(secret, 0), **e})
    lengths = {r["secret_tokens"] for r in rows} | {
        n for r in rows for n in r["alternative_tokens"]
    }
    # the alternatives are drawn at random: one that is another inserted secret would rank
    # high for a reason other than chance; say how many there are (expected ~0.06)
    drawn = set(make_secrets(args.samples + 1, 6, seed=1))
    clashes = len(drawn & set(counts))
    print(
        f"canary exposure ({CANARY_PREFIX!r} + 6 digits, |R| = 10^6 = 19.9 bits; "
        f"{args.samples} sampled alternatives, so at most "
        f"{rows[0]['max_measurable']:.1f} bits measurable)"
    )
    print(
        f"{'insertions':>10} {'secret':>14} {'-log p (nats)':>13} {'better':>7} "
        f"{'exposure':>9} {'extrapolated':>12}"
    )
    for r in rows:
        print(
            f"{r['insertions']:>10} {r['secret']:>14} {r['log_perplexity']:>13.2f} "
            f"{r['better_alternatives']:>7} {r['exposure']:>9.2f} "
            f"{r['exposure_extrapolated']:>12.2f}"
        )
    by_count = {
        n: statistics.mean(r["exposure"] for r in rows if r["insertions"] == n)
        for n in (0, *COUNTS)
    }
    print(
        "mean exposure by insertions: "
        + ", ".join(f"{n}: {v:.2f} bits" for n, v in by_count.items())
        + f" (inserted secrets among the alternatives: {clashes})"
    )
    print(f"tokens per secret, inserted or alternative: {sorted(lengths)} (one value: a fair rank)")

    # extraction probe: training windows, prefix in, greedy, do the next 50 tokens come out?
    train_tokens, _ = open_split(run_dir / "data", "train")
    gen = torch.Generator().manual_seed(args.seed)
    length = args.prefix + 50
    starts = torch.randint(0, len(train_tokens) - length, (args.probes,), generator=gen)
    sequences = [[int(t) for t in train_tokens[s : s + length]] for s in starts.tolist()]
    extraction = verbatim_extraction(model, sequences, prefix=args.prefix, suffix=50)
    # the reference: the same probe on held-out windows, text the model never trained on
    valid_tokens, _ = open_split(run_dir / "data", "valid")
    starts = torch.randint(0, len(valid_tokens) - length, (args.probes,), generator=gen)
    unseen = [[int(t) for t in valid_tokens[s : s + length]] for s in starts.tolist()]
    held_out = verbatim_extraction(model, unseen, prefix=args.prefix, suffix=50)
    for name, e in (("training", extraction), ("held-out", held_out)):
        print(
            f"verbatim extraction, {name} windows: {e['extracted']:.1%} of {e['sequences']} "
            f"reproduce 50 tokens after a {args.prefix}-token prefix; "
            f"{e['mean_matched_tokens']:.1f} tokens match on average"
        )

    # logit lens on held-out windows
    block = model.config.block_size
    starts = torch.randint(0, len(valid_tokens) - block - 1, (32,), generator=gen).tolist()
    windows = torch.stack(
        [torch.as_tensor(valid_tokens[s : s + block + 1].astype("int64")) for s in starts]
    )
    lens = logit_lens(model, windows[:, :-1])
    losses = lens_losses(lens, windows[:, 1:]).tolist()
    print(
        "logit-lens loss on held-out plays (nats/token), after the embeddings and each "
        "block: " + ", ".join(f"{v:.3f}" for v in losses)
    )
    if args.pictures:
        folder = Path(args.pictures)
        # one secret of each count and one control, on the alternatives they are ranked in
        first = {n: next(r for r in rows if r["insertions"] == n) for n in (*COUNTS, 0)}
        marks = {f"{n}x: {r['exposure']:.1f} bits": r["log_perplexity"] for n, r in first.items()}
        pic.exposure_png(pile, marks, folder / "interpret-exposure.png")
        pic.loss_by_layer({"held-out plays": losses}, folder / "interpret-lens-loss.png")
        print(f"pictures: {folder}/interpret-exposure.png, {folder}/interpret-lens-loss.png")

    summary = {
        "benchmark": "interpret",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "train_minutes_budget": args.minutes,
        "train_wall_s": round(train_s, 1) if trained else None,
        "train_minutes": round(results.get("minutes", 0.0), 2),
        "stopped_by_time_budget": results.get("stopped_by_time_budget"),
        "steps": results.get("steps"),
        "valid_bits_per_byte": results.get("valid_bits_per_byte"),
        "samples": args.samples,
        "exposure_by_insertions": {str(k): round(v, 3) for k, v in by_count.items()},
        "canaries": [
            {
                k: r[k]
                for k in (
                    "insertions",
                    "secret",
                    "log_perplexity",
                    "better_alternatives",
                    "exposure",
                    "exposure_extrapolated",
                )
            }
            for r in rows
        ],
        "extraction": extraction,
        "extraction_held_out": held_out,
        "alternatives_that_are_inserted_secrets": clashes,
        "tokens_per_secret": sorted(lengths),
        "lens_loss_by_layer": [round(v, 4) for v in losses],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
