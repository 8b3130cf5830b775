"""Numerics gate: 20 fp32 steps of a tiny GPT from a fixed seed against a trace checked in.

A change to what training computes (the schedule, the initialisation, the loss, the order
of the data, the optimizer) moves these losses by orders of magnitude more than the bound
below; a change that only reorders floating-point sums (another CPU kind's kernels, a
refactor that fuses two operations) moves them by less. After a deliberate change to
training, regenerate the trace and say why in the commit:

    .venv/bin/python -m tests.train.test_golden
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

from lmforge.config import ModelConfig, build_config
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain
from tests.conftest import tiny_overrides, write_corpus
from tests.numerics import U32, model_lengths

GOLDEN = Path(__file__).with_name("golden_trace.json")
STEPS = 20


def run_trace(folder: Path, **extra) -> dict:
    """Pretrain the tiny GPT of the suite (2 layers, width 32, characters) for 20 steps in
    fp32 and return its per-step training losses and gradient norms."""
    corpus = write_corpus(folder / "corpus")
    overrides = tiny_overrides(corpus, folder / "runs", **{"train.max_steps": STEPS, **extra})
    config = build_config({}, overrides)
    pretrain(config, progress=False, log=lambda _: None)
    rows = [r for r in MetricsLog.read(config.run_dir / "metrics.jsonl") if r["event"] == "train"]
    return {
        "config": overrides | {"data.corpus": "tests.conftest.write_corpus", "run.out_dir": "-"},
        "model": json.loads((config.run_dir / "config.json").read_text())["model"],
        "loss": [r["loss"] for r in rows],
        "grad_norm": [r["grad_norm"] for r in rows],
    }


def tolerance(model: dict, step: int, loss: float) -> float:
    """How far another CPU's kernels may move the loss of `step` (1-based).

    A sum of k terms rounds with an error that grows like sqrt(k) * u, not the worst case
    k * u of tests/numerics.py, with overwhelming probability (Higham and Mary, SIAM J.
    Sci. Comput. 2019); one forward pass chains the model's reductions and the loss's (the
    log-sum over the vocabulary, the mean over the batch's tokens), so its loss moves by
    about 2u * sqrt(sum of k) relative. Each step starts from weights that already differ
    by the earlier steps' rounding and adds its own: the bound grows with the step. Twenty
    steps of the tiny GPT give 7e-5 relative; AVX-512, AVX2 and SSE kernels and 1 or 2
    threads differ by at most 8e-8 (docs/numerics.md); a one-step change of the warmup
    moves the trace by over 1e-3 (test below).
    """
    config = ModelConfig(**model)
    tokens = model["block_size"] * 4  # train.batch_size in tiny_overrides
    lengths = [*model_lengths(config, model["block_size"]), model["vocab_size"], tokens]
    return 2 * U32 * math.sqrt(sum(lengths)) * step * loss


def check(trace: dict, golden: dict) -> list[str]:
    """The steps whose loss is off the golden trace by more than the tolerance."""
    bad = []
    for step, (got, want) in enumerate(zip(trace["loss"], golden["loss"]), start=1):
        bound = tolerance(golden["model"], step, want)
        if not abs(got - want) <= bound:
            bad.append(f"step {step}: loss {got!r}, golden {want!r} (+-{bound:.2g})")
    return bad


def test_training_follows_the_golden_trace(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    trace = run_trace(tmp_path)
    assert trace["model"] == golden["model"], "the tiny model changed: regenerate the trace"
    assert len(trace["loss"]) == len(golden["loss"]) == STEPS
    assert check(trace, golden) == []


def test_the_gate_sees_a_small_change_to_training(tmp_path):
    """One more warmup step (a smaller learning rate for the first steps) fails the gate."""
    golden = json.loads(GOLDEN.read_text())
    trace = run_trace(tmp_path, **{"train.warmup_steps": 6})
    assert len(check(trace, golden)) >= STEPS - 2


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        trace = run_trace(Path(folder))
    GOLDEN.write_text(json.dumps(trace, indent=1) + "\n")
    print(
        f"wrote {GOLDEN}: losses {trace['loss'][0]:.6f} .. {trace['loss'][-1]:.6f}", file=sys.stderr
    )
