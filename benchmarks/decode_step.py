"""The cost of one continuous-batching step, and of the products inside it, by row count.

Two tables, one run, one torch thread (a server's setting in benchmarks/serve.py):

1. one fp32 product (in, out) of a few rows, for nn.Linear's (out, in) weight and for
   lmforge.infer.layout's transposed one, and for a GPT-2-sized tied head computed as
   x W^T and as (W x^T)^T: the times and their ratio to one row's;
2. a bare `Scheduler.step()` loop on a GPT-2-124M-shaped model (random weights) with 1 or 8
   running sequences, and 8 with a prompt of 10 or 40 tokens joining every other step:
   nn.Linear fp32, the server's fp32 layout, and bf16; the median step and its ratio to
   one row's step.

    .venv/bin/python benchmarks/decode_step.py           # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/decode_step.py --small   # a 4-layer model, seconds

Prints the tables, then one JSON line. docs/LOG.md entry 21 and docs/serving.md quote it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.infer.batching import Request, Scheduler
from lmforge.infer.layout import TransposedLinear, WeightFirstLinear, transpose_linears
from lmforge.models import Transformer


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def timed(module, x: torch.Tensor, repeat: int) -> float:
    """Median seconds of `repeat` calls of module(x), after 3 warm-up calls."""
    for _ in range(3):
        module(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def products(rows: list[int]) -> list[dict]:
    torch.manual_seed(0)
    out = []
    linear = nn.Linear(768, 3072)
    head = nn.Linear(768, 50257, bias=False)
    cases = [("768x3072", linear, TransposedLinear(linear), 200),
             ("50257x768 head", head, WeightFirstLinear(head), 20)]  # fmt: skip
    with torch.no_grad():
        for name, plain, laid, repeat in cases:
            base = {}
            for m in rows:
                x = torch.randn(m, 768)
                a, b = timed(plain, x, repeat), timed(laid, x, repeat)
                base.setdefault("plain", a)
                base.setdefault("layout", b)
                out.append({"product": name, "rows": m, "linear_us": a * 1e6,
                            "layout_us": b * 1e6, "linear_x1": a / base["plain"],
                            "layout_x1": b / base["layout"]})  # fmt: skip
    return out


def step_time(model, running: int, joining: int, steps: int) -> float:
    sched = Scheduler(model, max_batch=16, prefill_chunk=64)
    for i in range(running):
        sched.submit(Request([5 + i] * 10, 10_000))
    for _ in range(3):
        sched.step()
    times = []
    for k in range(steps):
        if joining and k % 2 == 0:
            sched.submit(Request([7] * joining, 10_000))
        t = time.perf_counter()
        sched.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="4 layers, width 192 (a quick check)")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {cpu_name()}; 1 torch thread")

    rows = [1, 2, 4, 8, 16]
    table = products(rows)
    print(f"\n{'product':<16} {'rows':>4} {'nn.Linear us':>13} {'x 1 row':>8} "
          f"{'layout us':>10} {'x 1 row':>8}")  # fmt: skip
    for r in table:
        print(f"{r['product']:<16} {r['rows']:>4} {r['linear_us']:>13.0f} {r['linear_x1']:>8.2f} "
              f"{r['layout_us']:>10.0f} {r['layout_x1']:>8.2f}")  # fmt: skip

    if args.small:
        config = ModelConfig(vocab_size=2048, n_layer=4, n_embd=192, n_head=4, block_size=1024)
    else:
        config = ModelConfig(vocab_size=50257, n_layer=12, n_embd=768, n_head=12, block_size=1024)
    torch.manual_seed(0)
    base = Transformer(config).eval()
    variants = {"fp32 nn.Linear": base, "fp32 layout": transpose_linears(copy.deepcopy(base)),
                "bf16": copy.deepcopy(base).to(torch.bfloat16)}  # fmt: skip
    shapes = [(1, 0), (8, 0), (8, 10), (8, 40)]
    steps = []
    print(f"\n{'weights':<16} {'running':>7} {'joining':>7} {'step ms':>8} {'x 1 row':>8}")
    for name, model in variants.items():
        one = None
        for running, joining in shapes:
            ms = step_time(model, running, joining, args.steps) * 1000
            one = one or ms
            steps.append({"weights": name, "running": running, "joining": joining,
                          "step_ms": ms, "x1": ms / one})  # fmt: skip
            print(f"{name:<16} {running:>7} {joining:>7} {ms:>8.1f} {ms / one:>8.2f}")
    print(json.dumps({"benchmark": "decode_step", "cpu": cpu_name(), "small": args.small,
                      "products": table, "steps": steps}))  # fmt: skip


if __name__ == "__main__":
    main()
