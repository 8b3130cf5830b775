"""Generation speed: lmforge vs transformers' generate(), same GPT-2-124M weights, one run.

Greedy decoding of a 128-token prompt on the CPU. From the arrival time of each new token
(transformers' streamer, lmforge's on_token): prefill is the time to the first, decode
tokens/s the N - 1 tokens after it over the time they took. The ids of lmforge in fp32
must equal transformers' in fp32. Model-bandwidth utilisation (MBU) = bytes read per
decode step (the weights each token multiplies by, plus the KV cache) x tokens/s, over
the machine's read bandwidth measured first. Prints a table, then one JSON line.

Run:  python benchmarks/generate.py [--new-tokens 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import tempfile
import time

import torch
import transformers

from lmforge.infer import Sampling, generate
from lmforge.infer.quantize import quantize_int8
from lmforge.models import from_pretrained

PROMPT_LEN = 128


def read_bandwidth() -> float:
    """Bytes/s of summing a 1 GiB fp32 tensor (more than any cache), best of 5."""
    x = torch.ones(2**28)
    best = min(timed(x.sum)[0] for _ in range(5))
    return x.numel() * 4 / best


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class Stamps:
    """When each new token arrives: transformers' streamer interface (`put` gets the prompt
    first, then each step's tokens) and lmforge's `on_token` callback (once per row)."""

    def __init__(self):
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self) -> None:
        pass

    def on_token(self, row: int, token: int) -> bool:
        if row == 0:
            self.times.append(time.perf_counter())
        return False


def hf_run(model, ids, n, stamps):
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
        streamer=stamps,
    )
    return out[:, ids.size(1) :].tolist()


def ours_run(model, ids, n, stamps, decode_model=None):
    greedy = Sampling(temperature=0)
    out = generate(
        model, ids.tolist(), n, greedy, decode_model=decode_model, on_token=stamps.on_token
    )
    return [g.ids for g in out]


def speeds(run, model, ids, n, repeat=2):
    """Prefill seconds (to the first new token) and decode tokens/s (over the tokens after
    it), each the best of `repeat` runs, from the arrival times of the tokens of one run."""
    prefill, rate = float("inf"), 0.0
    for _ in range(repeat):
        stamps, start = Stamps(), time.perf_counter()
        out = run(model, ids, n, stamps)
        first, last = stamps.times[0], stamps.times[-1]
        prefill = min(prefill, first - start)
        rate = max(rate, (len(stamps.times) - 1) * ids.size(0) / (last - first))
    return prefill, rate, out


def decode_bytes(model, weight_bytes: int, ctx: int) -> int:
    """Bytes one decode step reads: every matrix a token multiplies by (not the embedding
    tables, of which it reads one row), and the keys and values of `ctx` positions."""
    c = model.config
    matrices = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
    ) + sum(m.qweight.numel() for m in model.modules() if hasattr(m, "qweight"))
    kv = 2 * c.n_layer * ctx * c.kv_heads * c.head_width * 4
    return matrices * weight_bytes + kv


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.new_tokens
    bandwidth = read_bandwidth()

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    folder = tempfile.mkdtemp()
    hf.save_pretrained(folder)
    ours = from_pretrained(folder).eval()
    ids = torch.randint(0, 50257, (1, PROMPT_LEN))
    batch = torch.randint(0, 50257, (8, PROMPT_LEN))
    ctx = PROMPT_LEN + n // 2  # the mean context over the decode steps

    rows = {}

    def measure(name, run, model, width, repeat=2):
        rows[name] = (*speeds(run, model, ids, n, repeat), width)
        print(f"  {name}: prefill {rows[name][0]:.3f} s, decode {rows[name][1]:.1f} tok/s",
              file=sys.stderr, flush=True)  # fmt: skip

    with torch.no_grad():
        measure("transformers fp32", hf_run, hf, 4)
        measure("transformers bf16", hf_run, copy.deepcopy(hf).to(torch.bfloat16), 2, 1)
        measure("lmforge fp32", ours_run, ours, 4)
        ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
        measure("lmforge bf16", ours_run, ours_bf16, 2, 1)
        # fp32 weights read the prompt, the bf16 copy decodes (lmforge.infer.precision)
        mixed = functools.partial(ours_run, decode_model=ours_bf16)
        measure("lmforge mixed", mixed, ours, 2, 1)
        # int8 runs once: its kernel is slow on CPUs without AVX-512 (see docs/inference.md).
        measure("lmforge int8", ours_run, quantize_int8(copy.deepcopy(ours)), 1, 1)
        _, hf_batch_tps, _ = speeds(hf_run, hf, batch, n, 1)
        _, ours_batch_tps, _ = speeds(ours_run, ours, batch, n, 1)

    ids_match = rows["lmforge fp32"][2] == rows["transformers fp32"][2]
    hf_prefill, hf_tps = rows["transformers fp32"][0], rows["transformers fp32"][1]
    hf_best_tps = max(hf_tps, rows["transformers bf16"][1])
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s, {args.threads} threads, prompt "
          f"{PROMPT_LEN}, {n} new tokens, greedy")  # fmt: skip
    print(f"{'':20}{'prefill s':>10}{'decode tok/s':>14}{'vs HF fp32':>11}{'MBU':>7}")
    results = {}
    for name, (prefill, tps, _, width) in rows.items():
        mbu = decode_bytes(ours, width, ctx) * tps / bandwidth
        print(f"{name:20}{prefill:10.3f}{tps:14.1f}{tps / hf_tps:11.2f}{mbu:7.0%}")
        results[name] = {"prefill_s": prefill, "decode_tok_s": tps, "mbu": mbu}
    print(f"batch 8 decode tok/s (fp32): transformers {hf_batch_tps:.1f}, "
          f"lmforge {ours_batch_tps:.1f}")  # fmt: skip
    best = max(results.values(), key=lambda r: r["decode_tok_s"])
    summary = {
        "benchmark": "generate",
        "model": "gpt2-124m (random init)",
        "prompt_tokens": PROMPT_LEN,
        "new_tokens": n,
        "threads": args.threads,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "ids_match_transformers": ids_match,
        "decode_speedup_vs_transformers_best": best["decode_tok_s"] / hf_best_tps,
        "prefill_speedup_fp32": hf_prefill / results["lmforge fp32"]["prefill_s"],
        "mixed_vs_transformers_fp32": {
            "prefill": hf_prefill / results["lmforge mixed"]["prefill_s"],
            "decode": results["lmforge mixed"]["decode_tok_s"] / hf_tps,
        },
        "batch8_tok_s": {
            "transformers_fp32": hf_batch_tps,
            "lmforge_fp32": ours_batch_tps,
        },
        **results,
    }
    print(json.dumps(summary))
    return 0 if ids_match else 1


if __name__ == "__main__":
    sys.exit(main())
