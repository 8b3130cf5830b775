"""The CPU kernel figures the precision policies rest on, fp32 against bf16 in one run.

- matmul peak (`lmforge.device.matmul_peak`): what MFU divides by;
- a GPT-2-sized Linear (768 -> 3072) on 1 to 32 rows: where a bf16 decode copy helps
  (one sequence) and where it hurts (batches, beams): `lmforge.infer.precision.resolve`;
- attention of one query over 150 cached positions, 12 heads of 64: why the KV cache stays
  fp32 under `--precision mixed`;
- matrix-vector read rate over 24 such matrices (out of cache) against a plain sum: what
  bounds a decode step.

Prints a table, then one JSON line.  Run:  python benchmarks/matmul_kernels.py
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from lmforge.device import matmul_peak

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def per_call(fn, calls: int) -> float:
    """Seconds per call, the best of three rounds."""
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def linear_ms(dtype: torch.dtype, rows: int) -> float:
    w, x = torch.randn(3072, 768).to(dtype), torch.randn(rows, 768).to(dtype)
    return per_call(lambda: F.linear(x, w), 50) * 1e3


def attention_us(dtype: torch.dtype) -> float:
    q = torch.randn(1, 12, 1, 64).to(dtype)
    k, v = torch.randn(1, 12, 150, 64).to(dtype), torch.randn(1, 12, 150, 64).to(dtype)
    return per_call(lambda: F.scaled_dot_product_attention(q, k, v), 500) * 1e6


def matvec_gb_s(dtype: torch.dtype) -> float:
    weights = [torch.randn(3072, 768).to(dtype) for _ in range(24)]  # 57-113 MB: not cached
    x = torch.randn(1, 768).to(dtype)
    seconds = per_call(lambda: [F.linear(x, w) for w in weights], 5)
    return sum(w.nbytes for w in weights) / seconds / 1e9


def main() -> int:
    cpu = torch.device("cpu")
    rows = [1, 2, 4, 8, 16, 32]
    total = torch.ones(2**27)
    results = {
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": {p: matmul_peak(cpu, p) / 1e9 for p in DTYPES},
        "linear_768x3072_ms": {p: {m: linear_ms(d, m) for m in rows} for p, d in DTYPES.items()},
        "attention_1x150_us": {p: attention_us(d) for p, d in DTYPES.items()},
        "matvec_gb_s": {p: matvec_gb_s(d) for p, d in DTYPES.items()},
        "sum_read_gb_s": total.nbytes / per_call(total.sum, 5) / 1e9,
    }

    peak = results["matmul_peak_gflops"]
    print(f"matmul peak GFLOP/s: fp32 {peak['fp32']:.1f}, bf16 {peak['bf16']:.1f}")
    print(f"{'Linear 768->3072, rows':24}" + "".join(f"{m:>8}" for m in rows))
    for name in DTYPES:
        times = results["linear_768x3072_ms"][name]
        print(f"{name + ' (ms)':24}" + "".join(f"{times[m]:8.3f}" for m in rows))
    attention = results["attention_1x150_us"]
    print(f"attention, 1 query x 150 keys: fp32 {attention['fp32']:.0f} us, bf16 "
          f"{attention['bf16']:.0f} us")  # fmt: skip
    matvec = results["matvec_gb_s"]
    print(f"matrix-vector read: fp32 {matvec['fp32']:.1f} GB/s, bf16 {matvec['bf16']:.1f} GB/s; "
          f"a plain sum reads {results['sum_read_gb_s']:.1f} GB/s")  # fmt: skip
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
