"""`lmforge data clean|dedup|near-dedup|filter|pii|decontaminate|recipes`: clean a corpus
before training (docs/data.md). Each single-step command is the pipeline with a one-step
recipe."""

from __future__ import annotations

SINGLE = {
    "dedup": ("exact duplicate documents and repeated lines", ["normalize", "exact_dedup",
              "span_dedup"]),
    "near-dedup": ("near-duplicate documents (MinHash + LSH)", ["near_dedup"]),
    "filter": ("Gopher quality and repetition rules", ["gopher_quality", "gopher_repetition"]),
    "c4": ("C4's line and page rules", ["c4"]),
    "pii": ("redact e-mails, phones, IPs, cards, IBANs, URL credentials", ["pii"]),
    "decontaminate": ("drop documents sharing 13-grams with an evaluation set",
                      ["decontaminate"]),
    "language": ("keep documents in the given languages", ["language"]),
}  # fmt: skip


def _common(p) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt/.jsonl files, folders, globs")
    p.add_argument("--output", required=True, help="directory for shards and the report")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--text-field", default="text", help="text field of .jsonl records")
    p.add_argument("--invalid-utf8", choices=["error", "replace"], default="error")
    p.add_argument("--max-doc-mb", type=float, default=64, help="refuse larger documents")
    p.add_argument("--no-progress", action="store_true")


def register(sub) -> None:
    p = sub.add_parser("data", help="clean a corpus: dedup, near-dedup, filters, PII, ...")
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = cmds.add_parser("clean", help="run a cleaning recipe (default: the 'default' recipe)")
    _common(c)
    c.add_argument("--recipe", default="default", help="recipe name or YAML file")
    c.set_defaults(run=run_clean, steps=None)
    for name, (text, steps) in SINGLE.items():
        s = cmds.add_parser(name, help=text)
        _common(s)
        if name == "near-dedup":
            s.add_argument("--threshold", type=float, default=0.8)
            s.add_argument("--num-perm", type=int, default=128)
            s.add_argument("--ngram", type=int, default=5)
        if name == "decontaminate":
            s.add_argument("--eval", nargs="+", required=True, help="evaluation files")
            s.add_argument("--ngram", type=int, default=13)
        if name == "language":
            s.add_argument("--keep", nargs="+", default=["en"], help="ISO 639-1 codes")
            s.add_argument("--min-score", type=float, default=0.65)
        s.set_defaults(run=run_clean, steps=steps, recipe=None)
    r = cmds.add_parser("recipes", help="list the shipped recipes")
    r.set_defaults(run=run_recipes)


def _recipe(args) -> dict | str:
    if args.steps is None:
        return args.recipe
    settings = {}
    if args.data_command == "near-dedup":
        settings["near_dedup"] = {
            "threshold": args.threshold,
            "num_perm": args.num_perm,
            "ngram": args.ngram,
        }
    if args.data_command == "decontaminate":
        settings["decontaminate"] = {"eval": args.eval, "n": args.ngram}
    if args.data_command == "language":
        settings["language"] = {"keep": args.keep, "min_score": args.min_score}
    return {
        "name": args.data_command,
        "steps": [{s: settings.get(s, {})} for s in args.steps],
    }


def run_clean(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.text.clean.pipeline import clean

    if args.workers is not None and args.workers < 1:
        raise LmforgeError(f"--workers {args.workers}: give at least 1")
    report = clean(
        args.inputs,
        _recipe(args),
        args.output,
        workers=args.workers,
        text_field=args.text_field,
        invalid_utf8=args.invalid_utf8,
        max_doc_bytes=int(args.max_doc_mb * 2**20),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for st in report["steps"]:
        removed = ", ".join(f"{r} {n}" for r, n in st["removed"].items())
        print(f"{st['step']:>18}: {st['docs_in']:>8} -> {st['docs_out']:<8} {removed}")
    print(
        f"wrote {report['docs_out']} of {report['docs_in']} documents in {report['shards']} "
        f"shards to {args.output} ({report['mb_per_s']:.2f} MB/s); report: "
        f"{args.output}/report.html"
    )
    return 0


def run_recipes(args, extra) -> int:
    from lmforge.text.clean.pipeline import load_recipe, recipe_names

    for name in recipe_names():
        steps = ", ".join(s for s, _ in load_recipe(name)[1])
        print(f"{name}: {steps}")
    return 0
