"""`lmforge evaluate RUN_DIR [--corpus ...]`: held-out loss and bits per byte of a language
model; `lmforge evaluate TASK --model DIR --data FILE`: a fine-tuned model's task metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli.corpus import add_reading_options
from lmforge.cli.finetune import add_data_options


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="bits per byte of a language model, or a fine-tuned model's task metrics",
        description="lmforge evaluate RUN_DIR: held-out loss and bits per byte. "
        "lmforge evaluate TASK --model DIR --data FILE: the task's metric table "
        "(classification/sentiment, qa, translation, summarization), also written as JSON.",
    )
    p.add_argument(
        "model", metavar="RUN_DIR|TASK", help="run or model directory; or a task, with --model"
    )
    p.add_argument(
        "--model", dest="task_model", metavar="DIR", help="fine-tuned model directory (task mode)"
    )
    p.add_argument("--data", help="task mode: JSONL or CSV records to score")
    p.add_argument(
        "--output", help="task mode: JSON file for the metrics (default: DIR/eval-DATA.json)"
    )
    add_data_options(p)
    p.add_argument(
        "--corpus",
        nargs="+",
        default=None,
        help="text to evaluate: 'shakespeare' (its held-out plays) or files, whose whole text "
        "is used; default: the run's own held-out split (data/valid.bin)",
    )
    add_reading_options(p)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument(
        "--int8", action="store_true", help="quantize the weights to int8 first (its cost)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(run=run)


def run(args, extra) -> int:
    if args.task_model is not None:
        return run_task(args)
    import numpy as np
    import torch

    from lmforge.data import eval_windows, open_split
    from lmforge.device import pick_device
    from lmforge.errors import LmforgeError
    from lmforge.infer import load_model_and_tokenizer
    from lmforge.text import load_shakespeare, read_documents
    from lmforge.train import evaluate

    device = pick_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, device)
    if model.config.head != "lm" or model.config.arch == "encoder-decoder":
        raise LmforgeError(
            f"{args.model} is not a causal language model (head {model.config.head}); "
            "bits per byte are for those. A masked LM's held-out loss is in its results.json; "
            "a fine-tuned model is scored with lmforge evaluate TASK --model DIR --data FILE"
        )
    if args.int8:
        from lmforge.infer.quantize import quantize_int8

        quantize_int8(model)
    if args.corpus is None:
        if not (Path(args.model) / "data" / "valid.json").is_file():
            raise LmforgeError(f"{args.model} has no held-out split (data/valid); pass --corpus")
        tokens, _ = open_split(Path(args.model) / "data", "valid")
    else:
        shakespeare = args.corpus == ["shakespeare"]
        docs = (
            load_shakespeare()[1]
            if shakespeare
            else read_documents(args.corpus, args.text_field, args.invalid_utf8)
        )
        eot = [tokenizer.eot_id] if tokenizer.eot_id is not None else []
        tokens = np.concatenate(
            [np.concatenate([eot, tokenizer.encode_array(d.text)]) for d in docs]
        )
    result = evaluate(
        model,
        eval_windows(np.asarray(tokens, dtype=np.int64), model.config.block_size, args.batch_size),
        torch.tensor(tokenizer.token_bytes()),
        device,
    )
    print(json.dumps(result))
    return 0


def run_task(args) -> int:
    from lmforge.cli.finetune import print_metrics
    from lmforge.device import pick_device
    from lmforge.errors import LmforgeError
    from lmforge.fileio import write_json
    from lmforge.tasks import get_task, load_task_model
    from lmforge.tasks.records import parse_fields

    cls = get_task(args.model)
    if args.data is None:
        raise LmforgeError("task evaluation needs --data FILE (JSONL or CSV records)")
    task, model = load_task_model(cls.name, args.task_model, pick_device(args.device))
    fields = parse_fields(args.field) or task.settings.get("fields") or {}
    records = cls.read(args.data, fields)
    task.check_records(records)
    metrics = task.score(task.predict(model, records, args.batch_size), records)
    print_metrics(metrics)
    output = args.output or Path(args.task_model) / f"eval-{Path(args.data).stem}.json"
    write_json(output, {"task": cls.name, "data": str(args.data), **metrics})
    print(f"-> {output}")
    return 0
