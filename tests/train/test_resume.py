"""Training state round-trips exactly: Ctrl-C at step 10 + --resume equals 20 straight steps."""

import os
import signal

import pytest

from lmforge.data.loader import WindowSampler
from lmforge.errors import LmforgeError
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain
from lmforge.train.trainer import TrainingInterrupted


def train_losses(run_dir):
    rows = MetricsLog.read(run_dir / "metrics.jsonl")
    return [(r["step"], r["loss"]) for r in rows if r["event"] == "train"]


def interrupt_at(monkeypatch, stop_step, seed):
    """Deliver a real SIGINT while step `stop_step` is being computed."""
    original = WindowSampler.batch

    def batch(self, step, micro=0):
        if step == stop_step and micro == 0 and self.seed == seed:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, step, micro)

    monkeypatch.setattr(WindowSampler, "batch", batch)


def test_interrupt_and_resume_equals_uninterrupted(tiny_config, monkeypatch):
    # Dropout makes the RNG state part of what must be restored.
    straight = tiny_config(**{"run.name": "straight", "model.dropout": 0.1})
    pretrain(straight, progress=False, log=lambda s: None)

    cfg = tiny_config(**{"run.name": "resumed", "model.dropout": 0.1})
    with monkeypatch.context() as m:
        interrupt_at(m, 9, cfg.train.seed)
        with pytest.raises(TrainingInterrupted) as e:
            pretrain(cfg, progress=False, log=lambda s: None)
    assert e.value.step == 10
    assert [s for s, _ in train_losses(cfg.run_dir)] == list(range(1, 11))
    result = pretrain(cfg, resume=True, progress=False, log=lambda s: None)
    assert result["steps"] == 20

    expected, got = train_losses(straight.run_dir), train_losses(cfg.run_dir)
    assert [s for s, _ in got] == list(range(1, 21))
    # a resume restores every state: the same numbers, bit for bit
    assert got == expected
    # Same weights at the end, so the same held-out figure.
    from safetensors.torch import load_file

    w1 = load_file(straight.run_dir / "model.safetensors")
    w2 = load_file(cfg.run_dir / "model.safetensors")
    assert w1.keys() == w2.keys()
    for name in w1:
        assert (w1[name] - w2[name]).abs().max() <= 1e-6, name


def test_a_line_cut_short_in_the_metrics_does_not_block_resume(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 4})
    pretrain(cfg, progress=False, log=lambda s: None)
    with open(cfg.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "st')
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 6})})
    assert pretrain(longer, resume=True, progress=False, log=lambda s: None)["steps"] == 6
    assert [s for s, _ in train_losses(cfg.run_dir)] == list(range(1, 7))


def test_truncated_checkpoint_is_refused(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 4})
    pretrain(cfg, progress=False, log=lambda s: None)
    state = cfg.run_dir / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(LmforgeError, match="train_state.pt is truncated or corrupt"):
        pretrain(cfg, resume=True, progress=False, log=lambda s: None)


def test_weights_and_state_from_different_steps_fall_back_to_the_previous_pair(tiny_config, capsys):
    cfg = tiny_config(**{"train.max_steps": 4})
    pretrain(cfg, progress=False, log=lambda s: None)
    saved = (cfg.run_dir / "train_state.pt").read_bytes()
    pretrain(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 6})}),
        resume=True,
        progress=False,
        log=lambda s: None,
    )
    (cfg.run_dir / "train_state.pt").write_bytes(saved)  # as if a crash came between the writes
    capsys.readouterr()
    result = pretrain(cfg, resume=True, progress=False, log=lambda s: None)
    assert "from step 6 but train_state.pt from step 4" in capsys.readouterr().err
    assert result["steps"] == 4  # the step-4 pair in previous/, already at max_steps


def test_resume_with_another_model_is_refused(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 2})
    pretrain(cfg, progress=False, log=lambda s: None)
    before = (cfg.run_dir / "model.safetensors").read_bytes()
    other = tiny_config(**{"train.max_steps": 2, "model.n_layer": 3})
    with pytest.raises(LmforgeError, match=r"model.n_layer: 2 -> 3"):
        pretrain(other, resume=True, progress=False, log=lambda s: None)
    assert (cfg.run_dir / "model.safetensors").read_bytes() == before
