"""`lmforge tokenizer train|encode`"""

from __future__ import annotations

import json

from lmforge.cli.corpus import add_reading_options


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer or encode text with one")
    cmds = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = cmds.add_parser("train", help="train on a corpus and save tokenizer.json")
    train.add_argument("inputs", nargs="+", help="'shakespeare' or .txt/.jsonl files, dirs, globs")
    train.add_argument("--algorithm", default="char", help="tokenizer algorithm")
    train.add_argument("--vocab-size", type=int, default=None)
    train.add_argument("--output", required=True, help="directory for tokenizer.json")
    add_reading_options(train)
    train.set_defaults(run=run_train)
    encode = cmds.add_parser("encode", help="print ids and tokens of a text")
    encode.add_argument("tokenizer", help="directory holding tokenizer.json")
    encode.add_argument("text")
    encode.set_defaults(run=run_encode)


def run_train(args, extra) -> int:
    from lmforge.text import load_corpus
    from lmforge.tokenizers import Tokenizer

    train, _ = load_corpus(args.inputs, args.text_field, args.invalid_utf8)
    tokenizer = Tokenizer.train((d.text for d in train), args.algorithm, args.vocab_size)
    path = tokenizer.save(args.output)
    print(f"{args.algorithm} tokenizer, {tokenizer.vocab_size} tokens -> {path}")
    return 0


def run_encode(args, extra) -> int:
    from lmforge.tokenizers import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    ids = tokenizer.encode(args.text)
    print(
        json.dumps(
            {"ids": ids, "tokens": [tokenizer.id_to_token(i) for i in ids]}, ensure_ascii=False
        )
    )
    return 0
