"""`lmforge evaluate RUN_DIR [--corpus ...]`: held-out loss and bits per byte."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli.corpus import add_reading_options


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="loss and bits per byte of a model on held-out text")
    p.add_argument("model", help="run or model directory")
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
