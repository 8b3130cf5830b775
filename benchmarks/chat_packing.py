"""Packed vs padded chat batches: the same 16 conversations a step, one per padded row or
packed into rows of the context with a block-diagonal mask (tasks/chat.py).

Usage: .venv/bin/python benchmarks/chat_packing.py [MODEL_DIR] [DATA.jsonl]
(default runs/demo and data/chat/train.jsonl: `make demo`, `lmforge corpus task-data chat
--output data/chat`). Times forward + backward in fp32 over the same batches, alternating
the two ways twice and keeping each one's second round; checks first that both give the
same loss. Prints a table and a final JSON line with the ratio.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from lmforge.tasks import load_task_model


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text()
    return ",".join(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in text) or "none"


def main(model_dir: str, data: str, steps: int = 12, batch_size: int = 16) -> None:
    task, model = load_task_model("chat", model_dir)
    lines = Path(data).read_text("utf-8").splitlines()
    records = [{"messages": json.loads(line)["messages"]} for line in lines if line.strip()]
    examples = task.examples(records)
    rng = random.Random(0)
    batches = [rng.sample(examples, batch_size) for _ in range(steps)]
    model.train()
    with torch.no_grad():
        same = [
            (task.loss(model, task.padded(b)).item(), task.loss(model, task.collate(b)).item())
            for b in batches[:3]
        ]
    assert all(abs(a - b) <= 1e-4 * abs(a) for a, b in same), same
    rows = {}
    for _ in range(2):  # the first round warms up; each way's second one counts
        for name, collate in (("padded", task.padded), ("packed", task.collate)):
            start, slots, tokens = time.perf_counter(), 0, 0
            for b in batches:
                batch = collate(b)
                slots += batch["input_ids"].numel()
                tokens += sum(len(e["input_ids"]) for e in b)
                task.loss(model, batch).backward()
                model.zero_grad(set_to_none=True)
            ms = (time.perf_counter() - start) / steps * 1000
            rows[name] = {"ms_per_step": ms, "slots_per_step": slots / steps}
            rows[name]["real_tokens_per_step"] = tokens / steps
    print(f"{cpu_name()} (flags: {cpu_flags()}), {torch.get_num_threads()} threads, fp32")
    print(f"{'batches':<8} {'ms/step':>9} {'token slots/step':>17} {'real tokens/step':>17}")
    for name, r in rows.items():
        print(
            f"{name:<8} {r['ms_per_step']:>9.0f} {r['slots_per_step']:>17.0f} "
            f"{r['real_tokens_per_step']:>17.0f}"
        )
    speedup = rows["padded"]["ms_per_step"] / rows["packed"]["ms_per_step"]
    print(
        json.dumps(
            {
                "benchmark": "chat_packing",
                "cpu": cpu_name(),
                "flags": cpu_flags(),
                "model": model_dir,
                "batch_size": batch_size,
                "padded": rows["padded"],
                "packed": rows["packed"],
                "packed_speedup": speedup,
                "same_loss": True,
            }
        )
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "runs/demo", args[1] if len(args) > 1 else "data/chat/train.jsonl")
