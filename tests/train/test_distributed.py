"""Parallel training on 2 CPU processes (gloo) against one process with the same global batch.

One module fixture trains every run once (about 12 tiny runs); the tests read their metrics.
The 2-process runs share one `torch.multiprocessing.spawn`, so the interpreters start once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from lmforge.config import ModelConfig, build_config
from lmforge.data.loader import WindowSampler
from lmforge.errors import LmforgeError
from lmforge.models import Transformer
from lmforge.train import distributed
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain
from lmforge.train.trainer import TrainingInterrupted
from tests.conftest import TINY_TEXT, tiny_overrides

BATCH = 4  # per process; a single process with the same global batch (ddp, fsdp) draws 8
STOP_AT = 10  # the interrupted runs stop (Ctrl-C on rank 0 only) after this step
SHARED = {
    "model.block_size": 16,
    "model.mlp": "gated",  # TP splits gate too
    "model.activation": "silu",
    "train.grad_accum_steps": 2,  # DDP and FSDP skip the gradient sync on the first micro-batch
    "run.sample_tokens": 5,
}


@contextlib.contextmanager
def ctrl_c_at(step: int, seed: int):
    """A real SIGINT while `step` (1-based) is computed, as a user's Ctrl-C would arrive."""
    original = WindowSampler.batch

    def batch(self, s, micro=0):
        if s == step - 1 and micro == 0 and self.seed == seed:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, s, micro)

    WindowSampler.batch = batch
    try:
        yield
    finally:
        WindowSampler.batch = original


def run(overrides: dict, resume: bool = False, stop_at: int | None = None) -> None:
    cfg = build_config({}, overrides)
    stopper = ctrl_c_at(stop_at, cfg.train.seed) if stop_at else contextlib.nullcontext()
    with stopper, contextlib.suppress(TrainingInterrupted):
        pretrain(cfg, resume=resume, progress=False, log=lambda s: None)


def _worker(rank: int, port: int, jobs: list, world: int = 2) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)  # two (or four) processes on two cores
    try:
        for overrides, resume, stop_at in jobs:
            run(overrides, resume, stop_at if rank == 0 else None)
    finally:
        distributed.teardown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(3):  # short: the final evaluation reads the whole held-out document
        text = TINY_TEXT[:1500].replace("First", f"Doc{i} First")
        (corpus / f"doc{i}.txt").write_text(text, "utf-8")

    def config(name: str, batch: int = BATCH, **extra) -> dict:
        return tiny_overrides(
            corpus, root, **SHARED, **{"run.name": name, "train.batch_size": batch}, **extra
        )

    one = 2 * BATCH  # a single process with the global batch of two
    run(config("single", one))
    run(config("single-then-fsdp", one), stop_at=STOP_AT)
    run(config("single-tp"))
    jobs = [
        (config("ddp", **{"train.parallel": "ddp"}), False, None),
        (config("ddp-resumed", **{"train.parallel": "ddp"}), False, STOP_AT),
        (config("ddp-resumed", **{"train.parallel": "ddp"}), True, None),
        (config("fsdp", **{"train.parallel": "fsdp"}), False, None),
        (config("fsdp-then-single", **{"train.parallel": "fsdp"}), False, STOP_AT),
        (config("single-then-fsdp", **{"train.parallel": "fsdp"}), True, None),
        (config("tp", **{"train.parallel": "tp"}), False, None),
    ]
    mp.spawn(_worker, args=(free_port(), jobs), nprocs=2)
    # a 2 x 2 mesh: TP within pairs of ranks, FSDP across the pairs, which split the batch
    mesh = {"train.parallel": "fsdp+tp", "train.tp_size": 2}
    two_d = [
        (config("fsdp+tp", **mesh), False, None),
        (config("fsdp+tp-then-single", **mesh), False, STOP_AT),
    ]
    mp.spawn(_worker, args=(free_port(), two_d, 4), nprocs=4)
    run(config("fsdp-then-single", one), resume=True)
    run(config("fsdp+tp-then-single", one), resume=True)
    return root


def losses(run_dir) -> list[float]:
    rows = MetricsLog.read(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["event"] == "train"] == list(range(1, 21))
    return [r["loss"] for r in rows if r["event"] == "train"]


def max_relative_difference(run_dir, reference_dir) -> float:
    pairs = zip(losses(run_dir), losses(reference_dir), strict=True)
    return max(abs(a - b) / abs(b) for a, b in pairs)


@pytest.mark.parametrize(("name", "reference"), [("ddp", "single"), ("fsdp", "single")])
def test_data_parallel_equals_one_process_with_the_same_global_batch(runs, name, reference):
    assert max_relative_difference(runs / name, runs / reference) <= 1e-4


def test_tensor_parallel_equals_one_process(runs):
    assert max_relative_difference(runs / "tp", runs / "single-tp") <= 1e-4


def test_fsdp_over_tensor_parallel_equals_one_process_with_the_same_global_batch(runs):
    assert max_relative_difference(runs / "fsdp+tp", runs / "single") <= 1e-4


def test_fsdp_checkpoint_resumes_in_one_process_and_back(runs):
    # Steps 1-10 under one mode, 11-20 under the other, against 20 steps in one process.
    assert max_relative_difference(runs / "fsdp-then-single", runs / "single") <= 1e-4
    assert max_relative_difference(runs / "single-then-fsdp", runs / "single") <= 1e-4
    assert max_relative_difference(runs / "fsdp+tp-then-single", runs / "single") <= 1e-4
    # The files are the single-process format: same tensors, same names.
    reference = load_file(runs / "single" / "model.safetensors")
    names = ("fsdp-then-single", "single-then-fsdp", "fsdp", "tp", "fsdp+tp", "fsdp+tp-then-single")
    for name in names:
        weights = load_file(runs / name / "model.safetensors")
        assert weights.keys() == reference.keys(), name


def test_ddp_resume_is_exact(runs):
    straight, resumed = losses(runs / "ddp"), losses(runs / "ddp-resumed")
    assert max(abs(a - b) for a, b in zip(straight, resumed)) <= 1e-6
    w1 = load_file(runs / "ddp" / "model.safetensors")
    w2 = load_file(runs / "ddp-resumed" / "model.safetensors")
    assert all((w1[k] - w2[k]).abs().max() <= 1e-6 for k in w1)


def test_only_rank_0_writes(runs):
    # One line per step: rank 1 logged nothing; the interrupted run was cut at step 10.
    rows = MetricsLog.read(runs / "ddp-resumed" / "metrics.jsonl")
    assert sum(r["event"] == "final_eval" for r in rows) == 1
    assert (runs / "ddp" / "results.json").is_file()


def test_rank_slices_partition_the_global_batch():
    tokens = torch.arange(500).numpy()
    global_batch = WindowSampler(tokens, 8, 6, seed=3)
    slices = [distributed.RankSlice(global_batch, r, 3).batch(5, 1) for r in range(3)]
    x, y = global_batch.batch(5, 1)
    assert torch.equal(torch.cat([s[0] for s in slices]), x)
    assert torch.equal(torch.cat([s[1] for s in slices]), y)
    assert slices[0][0].shape == (2, 8)


def test_tensor_parallel_needs_heads_that_split_evenly():
    model = Transformer(ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    distributed.check_tensor_parallel(model, 2)
    with pytest.raises(LmforgeError, match="n_head=2.*multiple of 3"):
        distributed.check_tensor_parallel(model, 3)


def test_mesh_sizes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two nodes of two: TP within each node
    assert distributed.tensor_parallel_size("fsdp+tp") == 2
    assert distributed.data_parallel_size("fsdp+tp") == 2
    assert distributed.data_parallel_rank("fsdp+tp") == 1
    assert distributed.data_parallel_size("tp") == 1
    assert distributed.data_parallel_size("fsdp") == 4
    assert distributed.data_parallel_rank("ddp") == 3
    with pytest.raises(LmforgeError, match="tp_size to divide the 4 processes, got 3"):
        distributed.tensor_parallel_size("fsdp+tp", 3)
    with pytest.raises(LmforgeError, match="tp_size is for train.parallel=fsdp.tp, not ddp"):
        distributed.data_parallel_size("ddp", 2)
    assert distributed.data_parallel_size("none", 2) == 1  # one process: no parallel settings
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # not under torchrun: one node of them all
    assert distributed.tensor_parallel_size("fsdp+tp") == 4


def test_several_processes_without_a_mode_use_ddp(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    notes = []
    assert distributed.resolve_mode("none", notes.append) == "ddp"
    assert "using ddp" in notes[0]
    assert distributed.resolve_mode("fsdp", notes.append) == "fsdp"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.resolve_mode("tp") == "none"
