"""`lmforge convert --from hf SRC DST` and `lmforge convert --to hf [--family F] SRC DST`"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="Hugging Face model directory <-> lmforge model directory",
        description="Convert a model directory, weights and tokenizer. --from hf reads a "
        "Hugging Face directory (config.json with model_type, safetensors) into an lmforge "
        "one; --to hf writes an lmforge (or run) directory as one transformers loads.",
    )
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="source_format", choices=["hf"], help="SRC is Hugging Face")
    way.add_argument("--to", dest="target_format", choices=["hf"], help="DST is Hugging Face")
    p.add_argument(
        "--family",
        choices=["gpt2", "llama", "bert", "bart"],
        default=None,
        help="with --to hf: the layout to write (default: the first that holds the model)",
    )
    p.add_argument("src", help="source directory")
    p.add_argument("dst", help="destination directory")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in DST")
    p.set_defaults(run=run)


def run(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.fileio import check_new_directory, staged_directory
    from lmforge.infer.loading import load_tokenizer
    from lmforge.models import from_pretrained, load_hf, save_model_dir, save_pretrained
    from lmforge.models.io import is_hf_directory

    dst = Path(args.dst)
    if (dst / "config.json").exists() and not args.overwrite:
        raise LmforgeError(f"{dst} already holds a model; pass --overwrite to replace it")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / "config.json").exists():
        raise LmforgeError(f"{dst} exists and holds no model; refusing to replace it")
    check_new_directory(dst, args.overwrite)
    if args.source_format == "hf":
        if args.family:
            raise LmforgeError("--family only applies with --to hf")
        if not is_hf_directory(args.src):
            raise LmforgeError(f"{args.src} is not a Hugging Face directory (no model_type)")
        model = load_hf(args.src)
    else:
        model = from_pretrained(args.src)
    written = ["config.json", "model.safetensors"]
    with staged_directory(dst) as out:  # all of it, or nothing
        if args.source_format == "hf":
            save_model_dir(model, out)
        else:
            save_pretrained(model, out, args.family)
        try:
            load_tokenizer(args.src).save(out)
            written.append("tokenizer.json")
        except LmforgeError as e:
            written.append(f"no tokenizer ({e})")
    print(f"{model.num_parameters():,} parameters -> {dst}: {', '.join(written)}")
    return 0
