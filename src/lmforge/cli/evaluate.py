"""`lmforge evaluate RUN_DIR [--corpus ...]`: held-out loss and bits per byte."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="loss and bits per byte of a model on held-out text")
    p.add_argument("model", help="run or model directory")
    p.add_argument(
        "--corpus",
        nargs="+",
        default=["shakespeare"],
        help="'shakespeare' (its held-out plays) or files whose whole text is evaluated",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(run=run)


def run(args, extra) -> int:
    import numpy as np
    import torch

    from lmforge.data import eval_windows
    from lmforge.device import pick_device
    from lmforge.models import from_pretrained
    from lmforge.text import load_shakespeare, read_documents
    from lmforge.tokenizers import Tokenizer
    from lmforge.train import evaluate

    tokenizer = Tokenizer.load(args.model)
    device = pick_device(args.device)
    model = from_pretrained(args.model, device)
    docs = load_shakespeare()[1] if args.corpus == ["shakespeare"] else read_documents(args.corpus)
    eot = [tokenizer.eot_id] if tokenizer.eot_id is not None else []
    tokens = np.concatenate([np.concatenate([eot, tokenizer.encode_array(d.text)]) for d in docs])
    result = evaluate(
        model,
        eval_windows(tokens.astype(np.int64), model.config.block_size, args.batch_size),
        torch.tensor(tokenizer.token_bytes()),
        device,
    )
    print(json.dumps(result))
    return 0
