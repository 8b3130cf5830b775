"""Model FLOPs utilisation: the training log's figure is the model's FLOPs at the logged
speed over the matmul peak that `matmul_peak` measures."""

import time

import pytest
import torch

from lmforge.device import matmul_peak
from lmforge.models import from_pretrained
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain


def test_matmul_peak_agrees_with_a_timed_matmul_of_another_size():
    a, b = torch.randn(768, 768), torch.randn(768, 768)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    timed = 2 * 768**3 / best
    # the same hardware limit, measured apart: generous bounds for a shared machine
    assert 0.2 < matmul_peak(torch.device("cpu"), "fp32") / timed < 5


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_training_log_reports_mfu(tiny_config):
    cfg = tiny_config()
    pretrain(cfg, progress=False, log=lambda s: None)
    flops = from_pretrained(cfg.run_dir).flops_per_token()
    peak = matmul_peak(torch.device("cpu"), "fp32")
    rows = [r for r in MetricsLog.read(cfg.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert rows
    for r in rows:
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * flops / peak, rel=1e-9)
        assert 0 < r["mfu"] < 1


def test_measuring_the_peak_leaves_the_global_rng_alone():
    # training measures it after seeding: a draw would change dropout and data
    before = torch.get_rng_state()
    matmul_peak.cache_clear()
    matmul_peak(torch.device("cpu"), "fp32")
    assert torch.equal(before, torch.get_rng_state())
