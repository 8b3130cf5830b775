"""scripts/gpu_check.sh's CPU fallback runs in the suite, so the GPU check cannot rot before
a GPU is lent: the same code paths (our train_step and generate against transformers'), on
tiny shapes, and the JSON line a GPU run reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_its_cpu_fallback():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and summary["precision"] in ("fp32", "bf16")
    train = summary["train"]
    assert train["ours_tok_s"] > 0 and train["hf_tok_s"] > 0 and 0 < train["ours_mfu"] < 1
    # the same weights and batch: the first losses agree (to the precision's rounding)
    ours, theirs = train["first_loss"]
    assert abs(ours - theirs) <= 0.02 * theirs
    assert set(summary["decode"]) == {"batch_1", "batch_4"}
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 for r in summary["decode"].values())
    assert set(summary["goals"]) == {
        "train_mfu_ge_40pct",
        "train_ge_1.3x_transformers",
        "decode_batch1_ge_2x_transformers",
    }
    assert "training 2L/64" in done.stdout and "decoding, greedy" in done.stdout
