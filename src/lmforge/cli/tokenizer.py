"""`lmforge tokenizer train|encode|stats`"""

from __future__ import annotations

import json

from lmforge.cli.corpus import add_reading_options


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer, encode text, measure compression")
    cmds = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = cmds.add_parser("train", help="train on a corpus's training split; save tokenizer.json")
    train.add_argument("inputs", nargs="+", help="'shakespeare' or .txt/.jsonl files, dirs, globs")
    train.add_argument(
        "--algorithm", default="bpe", choices=["char", "bpe", "wordpiece", "unigram"]
    )
    train.add_argument("--vocab-size", type=int, default=8192)
    train.add_argument(
        "--pattern", default="gpt2", choices=["gpt2", "cl100k"], help="BPE pre-tokenizer regex"
    )
    train.add_argument("--output", required=True, help="directory for tokenizer.json")
    add_reading_options(train)
    train.set_defaults(run=run_train)
    encode = cmds.add_parser("encode", help="print ids and tokens of a text")
    encode.add_argument("tokenizer", help="directory holding tokenizer.json")
    encode.add_argument("text")
    encode.set_defaults(run=run_encode)
    stats = cmds.add_parser("stats", help="bytes per token and vocabulary use on a corpus")
    stats.add_argument("tokenizer", help="directory holding tokenizer.json")
    stats.add_argument("inputs", nargs="+", help="'shakespeare' (held-out plays) or files")
    add_reading_options(stats)
    stats.set_defaults(run=run_stats)


def run_train(args, extra) -> int:
    import time

    from lmforge.config import build_config
    from lmforge.errors import LmforgeError
    from lmforge.text import load_corpus
    from lmforge.train.pretrain import train_tokenizer

    settings = {"data.tokenizer": args.algorithm, "data.pre_tokenizer": args.pattern}
    if args.vocab_size is not None:
        settings["data.vocab_size"] = args.vocab_size
    try:
        data = build_config({}, settings).data
    except LmforgeError as e:  # it names data.vocab_size; the flag is --vocab-size
        raise LmforgeError(str(e).replace("data.vocab_size", "--vocab-size")) from None
    train, _ = load_corpus(args.inputs, args.text_field, args.invalid_utf8)
    started = time.perf_counter()
    tokenizer = train_tokenizer(data, [d.text for d in train])
    path = tokenizer.save(args.output)
    seconds = time.perf_counter() - started
    print(f"{args.algorithm} tokenizer, {tokenizer.vocab_size} tokens, {seconds:.1f} s -> {path}")
    return 0


def run_encode(args, extra) -> int:
    from lmforge.tokenizers import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    enc = tokenizer.tokenize(args.text)
    print(
        json.dumps(
            {"ids": enc.ids, "tokens": enc.tokens, "offsets": enc.offsets}, ensure_ascii=False
        )
    )
    return 0


def run_stats(args, extra) -> int:
    import numpy as np

    from lmforge.text import load_corpus, read_documents
    from lmforge.tokenizers import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    if args.inputs == ["shakespeare"]:
        docs = load_corpus(["shakespeare"])[1]
    else:
        docs = read_documents(args.inputs, args.text_field, args.invalid_utf8)
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    n_bytes = n_tokens = 0
    for doc in docs:
        ids = tokenizer.encode_array(doc.text)
        counts += np.bincount(ids, minlength=tokenizer.vocab_size)
        n_bytes += len(doc.text.encode("utf-8"))
        n_tokens += len(ids)
    used = int((counts > 0).sum())
    print(
        json.dumps(
            {
                "documents": len(docs),
                "bytes": n_bytes,
                "tokens": n_tokens,
                "bytes_per_token": n_bytes / max(n_tokens, 1),
                "vocab_size": tokenizer.vocab_size,
                "vocab_used": used,
                "vocab_used_share": used / tokenizer.vocab_size,
            }
        )
    )
    return 0
