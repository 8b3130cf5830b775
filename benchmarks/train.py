"""Training speed: lmforge's training step vs a plain PyTorch loop over `transformers`'
GPT2LMHeadModel of the same shape, with the same weights and batches, in one run.

Our step is the engine's own `train_step` (lmforge.train.trainer) with `build_optimizer` (fused
AdamW where torch has it): the precision's autocast, `lm_loss`, `clip_grad_norm`. The baseline
is the loop a user would write: AdamW (torch's default kernels), cross-entropy of
`model(input_ids).logits`, `clip_grad_norm_`.
Both start from the same weights (ours exported with `save_pretrained`) and see the same
batches of the built-in corpus, tokenized by a byte-level BPE of the shape's vocabulary.

Steps alternate between the two models, so both feel the same machine load. For each shape it
reports tokens/s, step time and MFU: model FLOPs per token x tokens/s over the machine's matmul
peak (the faster of fp32 and bf16, measured at the start by `lmforge.device.matmul_peak`). Then
the baseline's best precision, our speed-up over it, and the largest relative difference
between the two fp32 loss curves. Prints a table, then one JSON line.

    python benchmarks/train.py                 # both shapes (about 10 minutes on 2 cores)
    python benchmarks/train.py --shapes char   # the small, overhead-bound shape only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import transformers

from lmforge.config import ModelConfig, TrainConfig
from lmforge.data.loader import WindowSampler
from lmforge.device import cpu_has_fast_bf16, matmul_peak
from lmforge.models.hf import save_pretrained
from lmforge.models.transformer import Transformer
from lmforge.text import load_shakespeare
from lmforge.tokenizers import Tokenizer
from lmforge.train.optim import build_optimizer
from lmforge.train.trainer import train_step

# the shapes: (layers, heads, width, context, batch)
SHAPES = {"gpt": (6, 6, 384, 256, 8), "char": (4, 4, 128, 64, 12)}
VOCAB = 8192
LR = 1e-3


def corpus_tokens(n_bytes: int = 1_500_000) -> np.ndarray:
    """The first plays of the built-in corpus, as ids of a byte-level BPE of VOCAB tokens."""
    text = "\n".join(doc.text for doc in load_shakespeare()[0])[:n_bytes]
    tok = Tokenizer.train([text], algorithm="bpe", vocab_size=VOCAB)
    return np.array(tok.encode(text, add_special_tokens=False), dtype=np.int64)


class Ours:
    name = "lmforge"

    def __init__(self, model: Transformer, precision: str):
        cfg = TrainConfig(learning_rate=LR, weight_decay=0.0, grad_clip=1.0)
        self.model, self.precision = model, precision
        self.optimizer = build_optimizer(model, cfg, torch.device("cpu"))

    def step(self, batch) -> float:
        cpu = torch.device("cpu")
        out = train_step(
            self.model,
            self.optimizer,
            [batch],
            lr=LR,
            device=cpu,
            precision=self.precision,
            grad_clip=1.0,
        )
        return out.loss


class OursForeach(Ours):
    """Our step with torch's default AdamW kernel instead of the fused one: the same
    arithmetic, rounded differently, so its distance from `Ours` is the noise floor of a
    loss-curve comparison."""

    name = "lmforge (foreach AdamW)"

    def __init__(self, model: Transformer, precision: str):
        super().__init__(model, precision)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)


class Baseline:
    name = "transformers"

    def __init__(self, model, precision: str):
        self.model, self.precision = model, precision
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)

    def step(self, batch) -> float:
        x, y = batch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def models(shape: tuple, seed: int = 0):
    layers, heads, width, context, _ = shape
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=VOCAB, block_size=context, n_layer=layers, n_head=heads, n_embd=width
    )
    ours = Transformer(config)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(ours, folder, "gpt2")
        hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa")
    return ours, hf


def race(runners: list, sampler, steps: int, warmup: int = 2) -> dict:
    """Steps of the runners in turn (who goes first rotates) on the same batches: their
    losses and median step seconds."""
    out = {r.name: {"losses": [], "seconds": []} for r in runners}
    for step in range(steps):
        batch = sampler.batch(step)
        turn = step % len(runners)
        for runner in runners[turn:] + runners[:turn]:
            t = time.perf_counter()
            out[runner.name]["losses"].append(runner.step(batch))
            out[runner.name]["seconds"].append(time.perf_counter() - t)
    for r in out.values():
        r["step_s"] = statistics.median(r["seconds"][warmup:])
    return out


def max_relative_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def compiled_step_s(shape: tuple, sampler, steps: int) -> tuple[float | None, float, str]:
    """Median step seconds of our model under torch.compile, the compile time, and any error."""
    ours, _ = models(shape)
    t = time.perf_counter()
    try:
        runner = Ours(torch.compile(ours), "fp32")
        runner.step(sampler.batch(0))
        runner.step(sampler.batch(1))
    except Exception as e:  # inductor needs a C++ compiler; report rather than fail
        return None, time.perf_counter() - t, f"{type(e).__name__}: {e}".splitlines()[0]
    compile_s = time.perf_counter() - t
    seconds = []
    for step in range(steps):
        t = time.perf_counter()
        runner.step(sampler.batch(step + 2))
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds), compile_s, ""


def measure(name: str, shape: tuple, tokens, peak: dict, args) -> dict:
    *_, context, batch = shape
    sampler = WindowSampler(tokens, context, batch, seed=1)
    tokens_per_step = context * batch
    ours, hf = models(shape)
    flops = ours.flops_per_token()
    rows = []

    def row(impl: str, precision: str, step_s: float) -> dict:
        tok_s = tokens_per_step / step_s
        r = {
            "shape": name,
            "impl": impl,
            "precision": precision,
            "step_ms": step_s * 1e3,
            "tokens_per_s": tok_s,
            "mfu": tok_s * flops / max(peak.values()),
        }
        rows.append(r)
        return r

    twin, _ = models(shape)
    runners = [Ours(ours, "fp32"), Baseline(hf, "fp32"), OursForeach(twin, "fp32")]
    fp32 = race(runners, sampler, args.steps)
    mine, theirs = fp32["lmforge"]["losses"], fp32["transformers"]["losses"]
    curve_diff = max_relative_difference(mine, theirs)
    noise = max_relative_difference(mine, fp32[OursForeach.name]["losses"])
    row("lmforge", "fp32", fp32["lmforge"]["step_s"])
    row("transformers", "fp32", fp32["transformers"]["step_s"])

    same_precision = {}
    if args.bf16 == "on" or (args.bf16 == "auto" and cpu_has_fast_bf16()):
        ours, hf = models(shape)
        steps = args.bf16_steps + 1
        bf16 = race([Ours(ours, "bf16"), Baseline(hf, "bf16")], sampler, steps, warmup=1)
        mine16 = row("lmforge", "bf16", bf16["lmforge"]["step_s"])
        theirs16 = row("transformers", "bf16", bf16["transformers"]["step_s"])
        same_precision = {
            "bf16_speedup": mine16["tokens_per_s"] / theirs16["tokens_per_s"],
            "bf16_mfu_of_bf16_peak": mine16["tokens_per_s"] * flops / peak["bf16"],
            "bf16_loss_curve_max_rel_diff": max_relative_difference(
                bf16["lmforge"]["losses"], bf16["transformers"]["losses"]
            ),
        }

    compiled_note = "not run (--compile to measure)"
    if args.compile:
        step_s, compile_s, error = compiled_step_s(shape, sampler, args.compile_steps)
        if step_s is None:
            compiled_note = f"failed after {compile_s:.0f} s: {error}"
        else:
            row("lmforge compiled", "fp32", step_s)
            compiled_note = f"compiled in {compile_s:.0f} s"

    baseline = max(
        (r for r in rows if r["impl"] == "transformers"), key=lambda r: r["tokens_per_s"]
    )
    best = max((r for r in rows if r["impl"] != "transformers"), key=lambda r: r["tokens_per_s"])
    return {
        "shape": name,
        "rows": rows,
        "flops_per_token": flops,
        "baseline_best": baseline["precision"],
        "speedup": best["tokens_per_s"] / baseline["tokens_per_s"],
        "ours_best": f"{best['impl']} {best['precision']}",
        "ours_mfu": best["mfu"],
        "fp32_speedup": fp32["transformers"]["step_s"] / fp32["lmforge"]["step_s"],
        **same_precision,
        "loss_curve_max_rel_diff": curve_diff,
        "loss_curve_noise_floor": noise,
        "loss_first_last": [mine[0], mine[-1]],
        "compile": compiled_note,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="gpt,char", help="comma-separated: gpt, char")
    parser.add_argument("--steps", type=int, default=50, help="fp32 steps of each model")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time bf16 autocast too (auto: on CPUs with AMX or AVX-512 BF16, the rule of "
        "precision: auto; elsewhere bf16 matmuls are 100x slower and cannot be the best)",
    )
    parser.add_argument("--bf16-steps", type=int, default=20, help="timed bf16 steps")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--compile-steps", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()

    peak = {p: matmul_peak(torch.device("cpu"), p) for p in ("fp32", "bf16")}
    print(
        f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} "
        f"GFLOP/s ({torch.get_num_threads()} threads); MFU is against the faster"
    )
    tokens = corpus_tokens()
    results = [measure(name, SHAPES[name], tokens, peak, args) for name in args.shapes.split(",")]

    print(
        f"\n{'shape':5} {'implementation':17} {'prec':4} {'ms/step':>9} {'tokens/s':>9} {'MFU':>6}"
    )
    for result in results:
        for r in result["rows"]:
            print(
                f"{r['shape']:5} {r['impl']:17} {r['precision']:4} {r['step_ms']:9.1f} "
                f"{r['tokens_per_s']:9.0f} {r['mfu']:6.1%}"
            )
    for r in results:
        print(
            f"{r['shape']}: {r['ours_best']} is {r['speedup']:.2f}x transformers' best "
            f"({r['baseline_best']}); fp32 loss curves differ by at most "
            f"{r['loss_curve_max_rel_diff']:.1e} (relative) over {args.steps} steps, ours "
            f"with another AdamW kernel by {r['loss_curve_noise_floor']:.1e}; "
            f"compile: {r['compile']}"
        )
        if "bf16_speedup" in r:
            print(
                f"{r['shape']}: in bf16 ours is {r['bf16_speedup']:.2f}x transformers' bf16 loop, "
                f"MFU {r['bf16_mfu_of_bf16_peak']:.0%} of the bf16 peak; bf16 loss curves differ "
                f"by at most {r['bf16_loss_curve_max_rel_diff']:.1e} (relative)"
            )
    summary = {
        "peak_gflops": {k: v / 1e9 for k, v in peak.items()},
        "threads": torch.get_num_threads(),
        **{r["shape"]: {k: v for k, v in r.items() if k not in ("rows", "shape")} for r in results},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
