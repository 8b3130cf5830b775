"""train.compile: where compilation fails, training goes on eagerly, with a warning."""

import pytest
import torch

from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain

QUIET = {"progress": False, "log": lambda s: None}


class Broken(torch.nn.Module):
    """What torch.compile gives where the C++ toolchain is missing: fails when first run."""

    def __init__(self, model):
        super().__init__()
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        raise RuntimeError("InductorError: no working C++ compiler found\n(details)")


def losses(cfg):
    rows = MetricsLog.read(cfg.run_dir / "metrics.jsonl")
    return [r["loss"] for r in rows if r["event"] == "train"]


def test_a_failed_compile_falls_back_to_eager(tiny_config, monkeypatch):
    broken = []
    monkeypatch.setattr(torch, "compile", lambda m: broken.append(Broken(m)) or broken[-1])
    compiled = tiny_config(**{"train.compile": True, "run.name": "compiled"})
    with pytest.warns(UserWarning, match="torch.compile failed .*no working C.. compiler"):
        pretrain(compiled, **QUIET)
    assert broken and broken[0].calls == 1  # tried once, then eager for good
    eager = tiny_config(**{"run.name": "eager"})
    pretrain(eager, **QUIET)
    assert losses(compiled) == losses(eager)
