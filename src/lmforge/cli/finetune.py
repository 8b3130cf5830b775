"""`lmforge finetune TASK --model BASE --train FILE [--valid FILE] --output DIR [...]`"""

from __future__ import annotations

import argparse
import sys

TASK_CHOICES = ["classification", "sentiment", "qa", "translation", "summarization", "chat"]


def add_data_options(p) -> None:
    p.add_argument(
        "--field",
        action="append",
        metavar="ROLE=NAME",
        help="the file's name for a field the task reads, e.g. --field text=review "
        "(roles: classification text, text_b, label; qa context, question, answers; "
        "translation source, target; summarization document, summary; chat messages)",
    )


def register(sub) -> None:
    from lmforge.tasks.finetune import FINETUNE_DEFAULTS, LORA_DEFAULTS, METHOD_LEARNING_RATES

    rates = METHOD_LEARNING_RATES
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on classification, QA, translation, summarization or chat",
        description="Fine-tune a base model directory (an lmforge run, a Hugging Face model, "
        "all-MiniLM-L6-v2) on JSONL/CSV records; the output is a model directory that "
        "`lmforge evaluate TASK` and `lmforge.pipeline` use.",
        epilog="training defaults (override with --train.KEY=VALUE): "
        + ", ".join(f"{k}={v}" for k, v in FINETUNE_DEFAULTS.items() if k != "learning_rate")
        + f"; learning_rate {rates['full']:g} (--method lora: {rates['lora']:g}, since its "
        f"adapters start at zero; probe: {rates['probe']:g}); max_steps covers --epochs (at "
        "least min_steps), warmup is 10% of it, evaluation once per epoch; where min_steps "
        "stretches a small set's run, evaluation comes --epochs times in all and a new task "
        "head learns at 10x the method's rate (head_lr_scale). LoRA: "
        + " ".join(
            f"--lora.{k}={v:g}" if isinstance(v, float) else f"--lora.{k}={v}"
            for k, v in LORA_DEFAULTS.items()
        )  # fmt: skip
        + " (all: every linear layer of the body); a new task head trains whole with the "
        "adapters and is saved with them (PEFT's modules_to_save) where transformers has a "
        "class for it. Of the model's settings only --model.dropout=P may change.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", choices=TASK_CHOICES)
    p.add_argument("--model", required=True, help="base model directory")
    p.add_argument("--train", required=True, dest="train_file", help="training records")
    p.add_argument("--valid", help="validation records (default: 10%% of --train)")
    p.add_argument("--output", required=True, help="directory for the fine-tuned model")
    add_data_options(p)
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training data")
    p.add_argument("--max-length", type=int, help="tokens per input (default: the context)")
    p.add_argument("--stride", type=int, help="qa: overlap of context windows in tokens")
    p.add_argument(
        "--max-target-tokens",
        type=int,
        help="translation/summarization: output cap (default 64, at most half the context)",
    )
    p.add_argument("--num-beams", type=int, help="translation/summarization: beam width")
    p.add_argument(
        "--label-smoothing",
        type=float,
        help="classification, translation, summarization, chat: e.g. 0.1",
    )
    p.add_argument(
        "--method",
        choices=["full", "lora", "probe"],
        default="full",
        help="full: train every weight; lora: low-rank adapters on frozen weights "
        "(settings below); probe: a linear probe, the new task head alone on frozen features",
    )
    p.add_argument(
        "--pooling",
        choices=["auto", "pooler", "first", "last", "mean"],
        help="classification: the vector the new head reads (default: the base's own, "
        "e.g. mean for a sentence-transformers model, else auto: the pooler, a decoder's "
        "last token or an encoder's first)",
    )
    p.add_argument(
        "--folds",
        type=int,
        help="k-fold cross-validation (classification, qa): K fine-tunings, each tested on "
        "the fold it did not see; mean and standard deviation in OUTPUT/folds.json",
    )
    p.add_argument("--group-by", help="with --folds: a record field whose groups stay in one fold")
    p.add_argument(
        "--learning-curve",
        metavar="PERCENTS",
        help="e.g. 10,25,50,100: fine-tune on each share of --train, plot the metric on it "
        "and on --valid (OUTPUT/curve.png, curve.json)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run, accepts_overrides=True)


def task_options(args) -> dict:
    names = ["max_length", "stride", "max_target_tokens", "num_beams", "label_smoothing"]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def run(args, extra) -> int:
    from lmforge.config import parse_overrides
    from lmforge.tasks import get_task
    from lmforge.tasks.finetune import finetune
    from lmforge.tasks.records import parse_fields
    from lmforge.train import distributed
    from lmforge.train.trainer import TrainingInterrupted

    if args.learning_curve is not None:
        return run_curve(args, extra)
    if args.folds is not None or args.group_by is not None:
        return run_folds(args, extra)
    try:
        summary = finetune(
            args.task,
            args.model,
            args.train_file,
            args.output,
            args.valid,
            fields=parse_fields(args.field),
            options=task_options(args),
            epochs=args.epochs,
            method=args.method,
            pooling=args.pooling,
            overrides=parse_overrides(extra),
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except TrainingInterrupted as e:
        if distributed.is_main():
            print(
                f"lmforge: {e} in {args.output}; continue with the same command and --resume",
                file=sys.stderr,
            )
        return 130
    finally:
        distributed.teardown()
    if not distributed.is_main():  # under torchrun rank 0 speaks for all
        return 0
    print_metrics(summary["valid"])
    if summary["method"] == "probe":
        print(
            f"linear probe: {summary['trainable_parameters']:,} of {summary['parameters']:,} "
            "parameters trained (the head)"
        )
    if summary["method"] == "lora":
        print(
            f"LoRA: {summary['trainable_parameters']:,} of {summary['parameters']:,} parameters "
            f"trained; adapters alone in {args.output}/adapter (PEFT layout)"
        )
    if summary["probe"] is not None:
        metric = get_task(args.task).metric
        ours, probe = summary["valid"][metric], summary["probe"][metric]
        verdict = "beats" if ours > probe else "does NOT beat"
        print(
            f"the fine-tune {verdict} the linear probe on the validation records: {metric} "
            f"{ours:.4f} against {probe:.4f} (logistic regression on the frozen base)"
        )
    print(f"best at step {summary['best_step']} of {summary['steps']} -> {args.output}")
    return 0


def recipe(args, extra) -> dict:
    """The fine-tuning settings of the command line, for each of several fine-tunings."""
    from lmforge.config import parse_overrides

    return {
        "options": task_options(args),
        "epochs": args.epochs,
        "method": args.method,
        "pooling": args.pooling,
        "overrides": parse_overrides(extra),
        "progress": not args.no_progress,
    }


def run_curve(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.tasks.curves import learning_curve, parse_shares
    from lmforge.tasks.records import parse_fields

    if args.valid is None or args.folds is not None or args.resume:
        raise LmforgeError("--learning-curve needs --valid records, and no --folds or --resume")
    report = learning_curve(
        args.task,
        args.model,
        args.train_file,
        args.valid,
        args.output,
        parse_shares(args.learning_curve),
        fields=parse_fields(args.field),
        overwrite=args.overwrite,
        finetune_kwargs=recipe(args, extra),
    )
    metric = report["metric"]
    print(f"\n{'share':>6} {'records':>8} {'train ' + metric:>16} {'valid ' + metric:>16}")
    for p in report["points"]:
        print(f"{p['share']:>5}% {p['records']:>8} {p['train']:>16.4f} {p['valid']:>16.4f}")
    print(f"-> {args.output}/curve.png, curve.json")
    return 0


def run_folds(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.tasks.crossval import cross_validate
    from lmforge.tasks.records import parse_fields

    if args.folds is None:
        raise LmforgeError("--group-by needs --folds K")
    if args.valid or args.resume:
        raise LmforgeError("--folds makes its own validation folds; drop --valid and --resume")
    report = cross_validate(
        args.task,
        args.model,
        args.train_file,
        args.output,
        args.folds,
        group_by=args.group_by,
        fields=parse_fields(args.field),
        overwrite=args.overwrite,
        finetune_kwargs=recipe(args, extra),
    )
    metrics = list(report["mean"])
    print(f"\n{'fold':>4} {'test':>5} " + " ".join(f"{m:>10}" for m in metrics))
    for r in report["per_fold"]:
        print(
            f"{r['fold']:>4} {r['test_records']:>5} " + " ".join(f"{r[m]:>10.4f}" for m in metrics)
        )
    print(
        "mean ± std "
        + ", ".join(f"{m} {report['mean'][m]:.4f} ± {report['std'][m]:.4f}" for m in metrics)
        + f" ({report['folds']} folds) -> {args.output}/folds.json"
    )
    return 0


def print_metrics(metrics: dict) -> None:
    """The figures as a table; per-class rows and the confusion matrix for classification."""
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:<{width}}  {value:.4f}")
        elif isinstance(value, int):
            print(f"{key:<{width}}  {value}")
    if "per_class" in metrics:
        labels = metrics["labels"]
        w = max(len(label) for label in labels)
        print(f"\n{'class':<{w}}  precision  recall     f1  support")
        for label, row in metrics["per_class"].items():
            print(
                f"{label:<{w}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}"
                f"  {row['support']:7d}"
            )
        print(
            f"\nconfusion matrix (rows: true, columns: predicted)\n{'':<{w}}  "
            + " ".join(f"{label[:6]:>6}" for label in labels)
        )
        for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
            print(f"{label:<{w}}  " + " ".join(f"{n:6d}" for n in row))
    sys.stdout.flush()
