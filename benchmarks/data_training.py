"""The effect of cleaning on training: pretrain a small character GPT on the built-in plays
made dirtier here (every play three times, boilerplate lines and PII strings injected), once
raw and once with `data.clean: default`; the held-out plays are left untouched in both.
Reports held-out bits per byte for each, and whether the injected PII strings come out of
each model when prompted with the text that preceded them in training (greedy decoding).

    .venv/bin/python benchmarks/data_training.py              # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/data_training.py --steps 150  # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from lmforge.config import build_config
from lmforge.text import register_corpus
from lmforge.text.corpus import Document
from lmforge.text.shakespeare import load_shakespeare

BOILERPLATE = [
    "This website uses cookies to improve your experience. Accept all cookies or read our policy.",
    "Click here to subscribe to our newsletter and get 10% off your first order today!!!",
    "Copyright 2024 Example Media Group. All rights reserved. Terms of use apply to this page.",
]
PII = [
    ("Write to the steward at ", "ophelia.secret@elsinore-mail.dk"),
    ("His card is ", "4111 1111 1111 1111"),
    ("Ring him on ", "+44 20 7946 0958"),
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def dirty(train: list[Document], seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    out = []
    for copy in range(3):
        for doc in train:
            lines = doc.text.split("\n")
            dirty_lines = []
            for i, line in enumerate(lines):
                dirty_lines.append(line)
                if i % 8 == 7:
                    dirty_lines.append(rng.choice(BOILERPLATE))
                if i % 200 == 199:
                    prefix, secret = rng.choice(PII)
                    dirty_lines.append(prefix + secret + ".")
            out.append(Document("\n".join(dirty_lines), f"{doc.source}#{copy}", doc.title))
    return out


def run(name: str, clean: str | None, out_dir: Path, steps: int) -> dict:
    from lmforge.train.pretrain import pretrain

    overrides = {
        "data.corpus": ["bench-dirty"],
        "data.clean": clean,
        "model.n_layer": 3,
        "model.n_head": 4,
        "model.n_embd": 128,
        "model.block_size": 128,
        "train.batch_size": 16,
        "train.max_steps": steps,
        "train.warmup_steps": min(50, steps // 5),
        "train.learning_rate": 2e-3,
        "train.eval_interval": steps,
        "train.eval_batches": 16,
        "train.precision": "fp32",
        "train.device": "cpu",
        "run.out_dir": str(out_dir),
        "run.name": name,
        "run.sample_tokens": 0,
    }
    cfg = build_config({}, overrides)
    result = pretrain(cfg, progress=False, log=lambda s: None)
    return {"cfg": cfg, "bpb": result["valid_bits_per_byte"]}


def leaked(run_dir: Path) -> list[str]:
    import torch

    from lmforge.infer.generate import generate
    from lmforge.infer.loading import load_model_and_tokenizer
    from lmforge.infer.sampling import Sampling

    model, tok = load_model_and_tokenizer(run_dir)
    model.eval()
    out = []
    with torch.no_grad():
        for prefix, secret in PII:
            ids = tok.encode(prefix)
            greedy = Sampling(temperature=0.0)
            gen = generate(model, [ids], max_new_tokens=len(secret) + 5, sampling=greedy)[0]
            text = tok.decode(gen.ids)
            if secret in text:
                out.append(secret)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    train, valid = load_shakespeare()
    register_corpus("bench-dirty", lambda: (dirty(train), valid))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-clean-") as tmp:
        for name, recipe in (("raw-dirty", None), ("cleaned", "default")):
            r = run(name, recipe, Path(tmp), args.steps)
            r["leaked"] = leaked(r["cfg"].run_dir)
            report = r["cfg"].run_dir / "clean-report.json"
            r["report"] = json.loads(report.read_text()) if report.exists() else None
            rows[name] = r
    print(f"{cpu_name()}; char GPT 3x128, {args.steps} steps of 16x128; held out: 6 plays")
    print(f"{'':12}{'train docs':>11}{'valid bpb':>10}  PII strings generated")
    for name, r in rows.items():
        docs = r["report"]["docs_out"] if r["report"] else len(train) * 3
        print(f"{name:12}{docs:11d}{r['bpb']:10.4f}  {len(r['leaked'])}/{len(PII)} {r['leaked']}")
    summary = {
        "benchmark": "data_training",
        "cpu": cpu_name(),
        "steps": args.steps,
        "valid_bpb": {k: r["bpb"] for k, r in rows.items()},
        "cleaned_better": rows["cleaned"]["bpb"] < rows["raw-dirty"]["bpb"],
        "pii_generated": {k: r["leaked"] for k, r in rows.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
