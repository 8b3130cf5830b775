"""`lmforge pretrain` killed with SIGKILL mid-training, then resumed with --resume, logs the
same per-step losses as a run that was never stopped: weights, optimizer, RNG (dropout is on)
and data position all come back from the checkpoint. Once as one process, once as two DDP
processes under `torchrun`, killed together as when their machine goes down."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lmforge.cli import main
from lmforge.train.metrics import MetricsLog
from tests.conftest import tiny_overrides

COMMAND = ["pretrain", "shakespeare-char", "--no-progress"]  # after `lmforge`


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


def endless_run_args(corpus_dir, tmp_path, **extra) -> list[str]:
    # A constant LR after warmup makes each step's loss independent of max_steps, so the run
    # to be killed can be given steps it never reaches. The preset's time budget is lifted:
    # under one the LR would follow the clock.
    return cli_overrides(
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
        **extra,
    )


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def sigkill_tree(pid: int) -> None:
    for p in process_tree(pid):  # stopped first, so none finishes or restarts a step meanwhile
        os.kill(p, signal.SIGSTOP)
    for p in process_tree(pid):
        os.kill(p, signal.SIGKILL)


def kill_after_a_checkpoint(launch: list[str], run_dir: Path, log: Path, env: dict) -> None:
    """Start `launch`, wait until a step has run after a checkpoint was on disk, then SIGKILL
    the process and every process it started."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(launch, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        checkpointed_at = None  # the last logged step when a checkpoint was first seen
        ready = False
        while not ready and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
            logged = max(train_losses(run_dir), default=0)
            if checkpointed_at is None and (run_dir / "train_state.pt").exists():
                checkpointed_at = logged
            ready = checkpointed_at is not None and logged > checkpointed_at
        assert ready and process.poll() is None, log.read_text()[-2000:]
        sigkill_tree(process.pid)
    finally:
        if process.poll() is None:
            sigkill_tree(process.pid)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def check_resumed_run(run_dir: Path, killed: dict, straight_dir: Path) -> None:
    expected, got = train_losses(straight_dir), train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, max(killed) + 3))
    # The same processes, shapes and kernels from the restored state: bit for bit.
    for step in expected:
        assert got[step] == expected[step], step
        if step in killed:  # what the killed run logged agrees too, lost steps included
            assert killed[step] == expected[step], step


def saved_step(run_dir: Path) -> int:
    return torch.load(run_dir / "train_state.pt", weights_only=True)["step"]


def test_sigkill_then_resume_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    args = endless_run_args(corpus_dir, tmp_path)
    run_dir = tmp_path / "runs" / "killed"
    # the same threads as this process, so the sums run in the same order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    launch = [sys.executable, "-m", "lmforge", *COMMAND, *args]
    kill_after_a_checkpoint(launch, run_dir, tmp_path / "stderr.txt", env)
    killed = train_losses(run_dir)
    assert max(killed) > saved_step(run_dir)  # some logged steps are lost with the process
    max_steps = max(killed) + 2

    # Resuming and the uninterrupted run need no process of their own: the same command in
    # this one, whose torch is imported already.
    assert main([*COMMAND, *args, f"--train.max_steps={max_steps}", "--resume"]) == 0
    straight = [*args, "--run.name=straight", f"--train.max_steps={max_steps}"]
    assert main([*COMMAND, *straight]) == 0
    check_resumed_run(run_dir, killed, tmp_path / "runs" / "straight")


def test_sigkill_of_a_ddp_run_then_resume_matches_an_uninterrupted_run(corpus_dir, tmp_path):
    args = endless_run_args(corpus_dir, tmp_path, **{"train.parallel": "ddp"})
    run_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch = [*torchrun, "--nproc_per_node=2", "-m", "lmforge", *COMMAND]
    kill_after_a_checkpoint([*launch, *args], run_dir, tmp_path / "stderr.txt", env)
    killed = train_losses(run_dir)
    assert max(killed) > saved_step(run_dir)
    max_steps = f"--train.max_steps={max(killed) + 2}"

    def finish(*extra: str) -> None:
        done = subprocess.run([*launch, *args, max_steps, *extra], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    finish("--resume")
    finish("--run.name=straight")
    check_resumed_run(run_dir, killed, tmp_path / "runs" / "straight")
