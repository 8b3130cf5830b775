"""`lmforge` command line: one module per command group, each a thin layer over the library."""

from __future__ import annotations

import argparse
import sys

from lmforge import __version__
from lmforge.cli import (
    bench_generate,
    chat,
    convert,
    corpus,
    data,
    embeddings,
    evaluate,
    explain,
    export,
    finetune,
    generate,
    lora,
    model,
    pretrain,
    serve,
    tokenizer,
)
from lmforge.errors import LmforgeError

COMMANDS = (
    pretrain,
    generate,
    chat,
    bench_generate,
    evaluate,
    export,
    finetune,
    lora,
    corpus,
    data,
    tokenizer,
    model,
    convert,
    embeddings,
    explain,
    serve,
)


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: what was wrong and where to look, exit 2.
    Subcommand parsers are of the same class."""

    def error(self, message: str):
        self.exit(2, f"lmforge: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lmforge",
        description="Build language models by hand: corpus, tokenizer, Transformer, training, "
        "generation.",
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args, extra) or 0
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
