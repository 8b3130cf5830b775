"""`lmforge corpus stats|export`: look at a corpus the way training will see it."""

from __future__ import annotations

from pathlib import Path


def add_reading_options(parser) -> None:
    """How user files are read: the same choices as the data.* config keys."""
    parser.add_argument("--text-field", default="text", help="text field of .jsonl records")
    parser.add_argument(
        "--invalid-utf8",
        choices=["error", "replace"],
        default="error",
        help="bytes that are not UTF-8: stop with an error, or replace them",
    )


def register(sub) -> None:
    p = sub.add_parser("corpus", help="statistics or a plain-text export of a corpus")
    cmds = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    stats = cmds.add_parser("stats", help="documents, characters and the train/valid split")
    stats.add_argument("corpus", nargs="*", default=["shakespeare"])
    add_reading_options(stats)
    stats.set_defaults(run=run_stats)
    export = cmds.add_parser("export", help="write train.txt and valid.txt")
    export.add_argument("corpus", nargs="*", default=["shakespeare"])
    export.add_argument("--output", required=True, help="directory to write into")
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    add_reading_options(export)
    export.set_defaults(run=run_export)
    demo = cmds.add_parser(
        "task-data",
        help="demo task data from the built-in plays: genre, speaker-qa, modernize, speakers, chat",
        description="Write OUTPUT/{train,valid,test}.jsonl, split by play (see docs/tasks.md).",
    )
    demo.add_argument("name", choices=["genre", "speaker-qa", "modernize", "speakers", "chat"])
    demo.add_argument("--output", required=True, help="directory to write into")
    demo.add_argument("--per-play", type=int, help="records per play (default 60)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=run_task_data)


def run_stats(args, extra) -> int:
    from lmforge.text import load_corpus

    train, valid = load_corpus(args.corpus, args.text_field, args.invalid_utf8)
    for name, docs in (("train", train), ("valid", valid)):
        chars = sum(len(d.text) for d in docs)
        size = sum(len(d.text.encode("utf-8")) for d in docs)
        print(f"{name}: {len(docs)} documents, {chars:,} characters, {size:,} bytes")
        genres = sorted({d.genre for d in docs if d.genre})
        if genres:
            print(f"  genres: {', '.join(genres)}")
        if name == "valid" and any(d.title for d in docs):
            print(f"  held out: {', '.join(d.title for d in docs)}")
    return 0


def run_export(args, extra) -> int:
    from lmforge.fileio import check_new_directory, staged_directory, write_text
    from lmforge.text import load_corpus

    check_new_directory(args.output, args.overwrite)
    train, valid = load_corpus(args.corpus, args.text_field, args.invalid_utf8)
    with staged_directory(args.output) as out:
        for name, docs in (("train", train), ("valid", valid)):
            write_text(out / f"{name}.txt", "\n".join(d.text for d in docs))
    for name in ("train", "valid"):
        print(f"wrote {Path(args.output) / name}.txt")
    return 0


def run_task_data(args, extra) -> int:
    from lmforge.tasks.shakespeare import make_dataset

    counts = make_dataset(args.name, args.output, args.per_play, args.seed)
    shown = ", ".join(f"{split} {n}" for split, n in counts.items())
    print(f"wrote {args.output}/{{train,valid,test}}.jsonl: {shown} records")
    return 0
