"""GPU check: lmforge's training step and decoding against transformers on the same GPU, in one
run. `scripts/gpu_check.sh` installs what is missing, runs the tests marked `cuda`, then this.

Training: GPT-2 small's shape (12 layers, width 768, 12 heads, context 1024, vocab 50257) in
bf16 autocast, our `train_step` eagerly and under `torch.compile`, side by side with a plain
loop over transformers' GPT2LMHeadModel (the same weights, exported with `save_pretrained`,
and the same batches); tokens/s and MFU, model FLOPs over the GPU's measured bf16 matmul peak.
Decoding: greedy tokens/s at batch 1 and 32 with bf16 weights, ours (`generate`) against
transformers' `generate`. Prints a table, then one JSON line with the goals of issue 14
(MFU >= 40%, training >= 1.3x transformers, batch-1 decoding >= 2x).

    python scripts/gpu_check.py            # CUDA: about 5 minutes on one GPU
    python scripts/gpu_check.py --cpu      # the CPU fallback: tiny shapes, seconds (the suite)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings

import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.device import matmul_peak, resolve_precision
from lmforge.infer import Sampling, generate
from lmforge.models import Transformer, save_pretrained
from lmforge.train.optim import build_optimizer
from lmforge.train.trainer import train_step

# (layers, heads, width, context, vocab, batch); decode: (prompt, new tokens, batches)
SHAPES = {
    "cuda": {"train": (12, 12, 768, 1024, 50257, 16), "decode": (64, 128, (1, 32))},
    "cpu": {"train": (2, 2, 64, 64, 512, 4), "decode": (8, 8, (1, 4))},
}
LR = 6e-4


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape, device) -> tuple[Transformer, torch.nn.Module]:
    """Our model and transformers' GPT2LMHeadModel with the same random weights."""
    import transformers

    layers, heads, width, context, vocab, _ = shape
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=vocab, block_size=context, n_layer=layers, n_head=heads, n_embd=width
    )
    ours = Transformer(config)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(ours, folder, "gpt2")
        hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa")
    return ours.to(device), hf.to(device)


def batches(shape, steps: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    *_, context, vocab, batch = shape
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.randint(0, vocab, (batch, context + 1), generator=g)
        out.append((x[:, :-1].to(device), x[:, 1:].to(device)))
    return out


def time_steps(step, data, warmup: int, device) -> tuple[float, list[float]]:
    """Median seconds of a step after `warmup` steps, and every step's loss."""
    seconds, losses = [], []
    for i, batch in enumerate(data):
        sync(device)
        t = time.perf_counter()
        losses.append(step(batch))
        sync(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - t)
    return statistics.median(seconds), losses


def ours_step(model, device, precision, forward=None):
    optimizer = build_optimizer(model, TrainConfig(learning_rate=LR, weight_decay=0.0), device)

    def step(batch) -> float:
        out = train_step(
            model, optimizer, [batch], lr=LR, device=device, precision=precision,
            grad_clip=1.0, forward=forward,
        )  # fmt: skip
        return out.loss

    return step


def hf_step(model, device, precision):
    kwargs = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, **kwargs)

    def step(batch) -> float:
        x, y = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def training(shape, device, precision, steps: int, warmup: int, compile_: bool) -> dict:
    ours, hf = build(shape, device)
    flops = ours.flops_per_token()
    tokens = shape[3] * shape[5]
    data = batches(shape, steps + warmup, device)
    mine_s, mine_losses = time_steps(ours_step(ours, device, precision), data, warmup, device)
    theirs_s, theirs_losses = time_steps(hf_step(hf, device, precision), data, warmup, device)
    result = {
        "tokens_per_step": tokens,
        "flops_per_token": flops,
        "ours_tok_s": tokens / mine_s,
        "hf_tok_s": tokens / theirs_s,
        "first_loss": [mine_losses[0], theirs_losses[0]],
        "compiled": "not run",
    }
    if compile_:
        twin, _ = build(shape, device)
        t = time.perf_counter()
        try:
            step = ours_step(twin, device, precision, forward=torch.compile(twin))
            compiled_s, _ = time_steps(step, data, warmup + 2, device)  # +2: compilation
            result["ours_compiled_tok_s"] = tokens / compiled_s
            result["compiled"] = f"ok, {time.perf_counter() - t:.0f} s in all"
        except Exception as e:  # no compiler, an unsupported op: report, do not fail
            result["compiled"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return result


@torch.no_grad()
def decoding(shape, decode, device, precision) -> dict:
    ours, hf = build(shape, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    ours, hf = ours.to(dtype).eval(), hf.to(dtype).eval()
    prompt_len, new, rows_list = decode
    vocab = shape[4]
    out = {}
    for rows in rows_list:
        g = torch.Generator().manual_seed(rows)
        prompts = torch.randint(0, vocab, (rows, prompt_len), generator=g)
        runs = {}
        for name in ("ours", "transformers"):
            best = float("inf")
            for _ in range(2):  # the first run warms the kernels up
                sync(device)
                t = time.perf_counter()
                if name == "ours":
                    got = generate(ours, prompts.tolist(), new, Sampling(temperature=0))
                    ids = [g_.ids for g_ in got]
                else:
                    seq = hf.generate(
                        prompts.to(device),
                        attention_mask=torch.ones_like(prompts).to(device),
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                        pad_token_id=0,
                    )
                    ids = seq[:, prompt_len:].tolist()
                sync(device)
                best = min(best, time.perf_counter() - t)
            runs[name] = (rows * new / best, ids)
        same = sum(a[0] == b[0] for a, b in zip(runs["ours"][1], runs["transformers"][1]))
        out[f"batch_{rows}"] = {
            "ours_tok_s": runs["ours"][0],
            "hf_tok_s": runs["transformers"][0],
            "speedup": runs["ours"][0] / runs["transformers"][0],
            "first_token_agrees": same / rows,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback, tiny shapes")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    kind = "cuda" if cuda else "cpu"
    if not cuda and not args.cpu:
        print("gpu_check: no CUDA GPU is visible; running the CPU fallback", file=sys.stderr)
    precision = resolve_precision("auto", device)
    steps = args.steps or (20 if cuda else 3)
    peak = matmul_peak(device, precision)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"{name}: {precision} matmul peak {peak / 1e12:.2f} TFLOP/s; torch {torch.__version__}")

    shape = SHAPES[kind]["train"]
    train = training(shape, device, precision, steps, 3, cuda and not args.no_compile)
    for key in ("ours", "ours_compiled", "hf"):
        if f"{key}_tok_s" in train:
            train[f"{key}_mfu"] = train[f"{key}_tok_s"] * train["flops_per_token"] / peak
    best = max(train["ours_tok_s"], train.get("ours_compiled_tok_s", 0.0))
    train["speedup"] = best / train["hf_tok_s"]
    decode = decoding(shape, SHAPES[kind]["decode"], device, precision)

    print(f"\ntraining {shape[0]}L/{shape[2]} ctx {shape[3]} batch {shape[5]}, {precision}")
    print(f"{'implementation':22} {'tokens/s':>10} {'MFU':>6}")
    rows = [("lmforge", "ours"), ("lmforge compiled", "ours_compiled"), ("transformers", "hf")]
    for label, key in rows:
        if f"{key}_tok_s" in train:
            print(f"{label:22} {train[f'{key}_tok_s']:10,.0f} {train[f'{key}_mfu']:6.1%}")
    print(f"compile: {train['compiled']}; speed-up {train['speedup']:.2f}x")
    print(f"\ndecoding, greedy, {precision} weights")
    for rows_name, r in decode.items():
        print(
            f"{rows_name:10} lmforge {r['ours_tok_s']:9,.0f} tok/s   transformers "
            f"{r['hf_tok_s']:9,.0f} tok/s   {r['speedup']:.2f}x"
        )
    batch1 = decode[next(iter(decode))]
    mfu = max(train["ours_mfu"], train.get("ours_compiled_mfu", 0.0))
    summary = {
        "device": name,
        "precision": precision,
        "peak_tflops": peak / 1e12,
        "train": train,
        "decode": decode,
        "goals": {
            "train_mfu_ge_40pct": mfu >= 0.40,
            "train_ge_1.3x_transformers": train["speedup"] >= 1.3,
            "decode_batch1_ge_2x_transformers": batch1["speedup"] >= 2.0,
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
