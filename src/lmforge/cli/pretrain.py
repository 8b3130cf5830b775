"""`lmforge pretrain PRESET [--resume] [--section.key=value ...]`

Also under torchrun (`torchrun --nproc_per_node=N -m lmforge pretrain ...`, or the `lmforge`
script): every process runs this, rank 0 prints (see docs/distributed.md)."""

from __future__ import annotations

import argparse
import shlex
import sys

from lmforge.config import describe_fields, load_config, parse_overrides, preset_names


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="corpus -> tokenizer -> shards -> GPT -> held-out bits per byte -> sample",
        description="Pretrain a GPT from a preset, end to end, into runs/<run.name>/.",
        epilog="presets: "
        + ", ".join(preset_names())
        + "\n\nconfig overrides, as --key=value (a preset may set other values):\n"
        + describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("preset", help="preset name or path of a YAML config")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its checkpoint, with the config it was made with "
        "(overrides given now apply on top; model and data must not change)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args, extra: list[str]) -> int:
    from lmforge.train import distributed
    from lmforge.train.pretrain import pretrain, resume_config
    from lmforge.train.trainer import TrainingInterrupted

    overrides = parse_overrides(extra)
    cfg = load_config(args.preset, overrides)
    if args.resume:  # continue with the settings the run was made with, plus today's overrides
        cfg = resume_config(cfg.run_dir, overrides)
    try:
        result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as e:
        where = shlex.join([f"--run.out_dir={cfg.run.out_dir}", f"--run.name={cfg.run.name}"])
        if distributed.is_main():
            launcher = "torchrun ... -m lmforge" if distributed.world_size() > 1 else "lmforge"
            print(
                f"lmforge: {e} in {cfg.run_dir}; continue with: "
                f"{launcher} pretrain {shlex.quote(args.preset)} {where} --resume",
                file=sys.stderr,
            )
        return 130
    finally:
        distributed.teardown()
    if not distributed.is_main():
        return 0
    print(f"\n--- sample ({cfg.run_dir}/samples.txt) ---\n{result['sample']}\n---")
    bpb = result["valid_bits_per_byte"]
    figure = (
        f"{bpb:.4f} bits per byte"
        if bpb is not None
        else "masked LM: per corrupted token, no bits per byte"
    )
    print(
        f"held-out loss {result['valid_loss_nats_per_token']:.4f} nats/token, {figure} "
        f"({result['steps']} steps, {result['minutes']:.1f} min) -> {cfg.run_dir}"
    )
    return 0
