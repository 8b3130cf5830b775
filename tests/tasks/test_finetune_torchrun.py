"""Fine-tuning under torchrun: 2 CPU processes (DDP, gloo), each with half of every global
batch, against one process with the whole batch, through the real CLI."""

import json
import math
import os
import subprocess
import sys

from lmforge.models import from_pretrained
from lmforge.train.metrics import MetricsLog
from tests.numerics import U32, model_lengths
from tests.tasks.conftest import sentiment_records, write_jsonl

# fp32: under bf16 autocast (what `auto` picks on AMX and AVX-512 BF16 CPUs) each weight
# gradient is a bf16-rounded sum over the rows, so halves and the whole differ by 2^-8.
ARGS = ["--train.learning_rate=3e-3", "--train.device=cpu", "--train.precision=fp32"]
ARGS += ["--epochs=2", "--no-progress", "--train.log_interval=1"]


def finetune_cli(launcher: list[str], base, data: dict, out, *extra: str):
    command = [*launcher, "finetune", "sentiment", "--model", str(base)]
    command += ["--train", str(data["train"]), "--valid", str(data["valid"])]
    command += ["--output", str(out), *ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_losses(out) -> list[float]:
    return [r["loss"] for r in MetricsLog.read(out / "metrics.jsonl") if r["event"] == "train"]


def test_two_processes_fine_tune_as_one_with_the_same_global_batch(bases, tmp_path):
    data = {
        split: write_jsonl(tmp_path / f"{split}.jsonl", sentiment_records(n, seed))
        for split, n, seed in (("train", 64, 0), ("valid", 16, 1))
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = [*torchrun, "--nproc_per_node=2", "-m", "lmforge"]
    one = [sys.executable, "-m", "lmforge"]
    done = finetune_cli(two, bases["encoder"], data, tmp_path / "ddp", "--train.batch_size=4")
    finetune_cli(one, bases["encoder"], data, tmp_path / "one", "--train.batch_size=8")

    assert "2 processes, ddp" in done.stdout  # the start-up line, printed once, by rank 0
    assert done.stdout.count("classification: 64 training") == 1
    assert done.stdout.count("best at step") == 1
    ddp, single = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "one")
    assert len(ddp) == len(single) > 0
    # The same examples in each step's global batch and the mean of the two halves' mean
    # losses is the batch's mean (one label per example): only the order of sums differs,
    # and its rounding carried through the steps, bounded as the golden trace's is
    # (tests/train/test_golden.py); a missing gradient average or a wrong slice moves the
    # losses by over 1e-2.
    config = from_pretrained(bases["encoder"]).config
    lengths = [*model_lengths(config, config.block_size), 8]  # and the mean over 8 rows
    for step, (a, b) in enumerate(zip(ddp, single, strict=True), start=1):
        bound = 2 * U32 * math.sqrt(sum(lengths)) * step * abs(b)
        assert abs(a - b) <= bound, (step, a, b, bound)
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["steps"] == json.loads((tmp_path / "one" / "results.json").read_text())["steps"]
    assert not (tmp_path / ".ddp.incomplete").exists()  # staged, then swapped in whole
