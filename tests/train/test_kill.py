"""`lmforge pretrain` killed with SIGKILL mid-training, then resumed with --resume, logs the
same per-step losses as a run that was never stopped: weights, optimizer, RNG (dropout is on)
and data position all come back from the checkpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lmforge.cli import main
from lmforge.train.metrics import MetricsLog
from tests.conftest import tiny_overrides


def cli_overrides(corpus, out_dir, **extra) -> list[str]:
    args = []
    for key, value in tiny_overrides(corpus, out_dir, **extra).items():
        value = f"[{', '.join(value)}]" if isinstance(value, list) else value
        args.append(f"--{key}={value}")
    return args


def train_losses(run_dir) -> dict[int, float]:
    path = run_dir / "metrics.jsonl"
    rows = MetricsLog.read(path) if path.exists() else []
    return {r["step"]: r["loss"] for r in rows if r["event"] == "train"}


COMMAND = ["shakespeare-char", "--no-progress"]  # after `lmforge pretrain`


def test_sigkill_then_resume_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    # A constant LR after warmup makes each step's loss independent of max_steps, so the run
    # to be killed can be given steps it never reaches. The preset's time budget is lifted:
    # under one the LR would follow the clock.
    args = cli_overrides(
        corpus_dir,
        tmp_path / "runs",
        **{
            "model.dropout": 0.1,
            "train.schedule": "constant",
            "train.max_minutes": "null",
            "train.eval_interval": 3,
            "train.max_steps": 100_000,
            "run.name": "killed",
        },
    )
    run_dir = tmp_path / "runs" / "killed"
    # the same threads as this process, so the sums run in the same order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "lmforge", "pretrain", *COMMAND, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        checkpointed_at = None  # the last logged step when a checkpoint was first seen
        ready = False
        while not ready and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
            logged = max(train_losses(run_dir), default=0)
            if checkpointed_at is None and (run_dir / "train_state.pt").exists():
                checkpointed_at = logged
            # at least one step ran after a checkpoint was on disk
            ready = checkpointed_at is not None and logged > checkpointed_at
        assert ready and process.poll() is None, log.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL

    killed = train_losses(run_dir)
    saved_step = torch.load(run_dir / "train_state.pt", weights_only=True)["step"]
    assert max(killed) > saved_step  # some logged steps are lost with the process
    max_steps = max(killed) + 2

    # Resuming and the uninterrupted run need no process of their own: the same command in
    # this one, whose torch is imported already.
    assert main(["pretrain", *COMMAND, *args, f"--train.max_steps={max_steps}", "--resume"]) == 0
    straight = [*args, "--run.name=straight", f"--train.max_steps={max_steps}"]
    assert main(["pretrain", *COMMAND, *straight]) == 0
    expected = train_losses(tmp_path / "runs" / "straight")
    got = train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, max_steps + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
        if step in killed:  # what the killed run logged agrees too, lost steps included
            assert killed[step] == pytest.approx(expected[step], abs=1e-6), step
