"""The previous checkpoint is kept: a damaged latest one falls back to it, a crash at any point
of a checkpoint write leaves a whole pair to resume from."""

import os
import shutil

import pytest
import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.models import Transformer, from_pretrained
from lmforge.train.checkpoint import load_checkpoint, save_checkpoint
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import build_optimizer
from lmforge.train.pretrain import pretrain

QUIET = {"progress": False, "log": lambda s: None}


def train_losses(run_dir):
    rows = MetricsLog.read(run_dir / "metrics.jsonl")
    return [(r["step"], r["loss"]) for r in rows if r["event"] == "train"]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damaged", ["model.safetensors", "train_state.pt"])
def test_a_truncated_latest_checkpoint_resumes_from_the_previous_one(tiny_config, capsys, damaged):
    # Checkpoints at step 10 (evaluation) and 20 (end): previous/ holds step 10.
    cfg = tiny_config(**{"model.dropout": 0.1})
    pretrain(cfg, **QUIET)
    before = train_losses(cfg.run_dir)
    truncate(cfg.run_dir / damaged)
    capsys.readouterr()

    result = pretrain(cfg, resume=True, **QUIET)
    err = capsys.readouterr().err
    assert f"{cfg.run_dir / damaged} is truncated or corrupt" in err
    assert "previous checkpoint (step 10" in err
    assert result["steps"] == 20
    after = train_losses(cfg.run_dir)
    assert [s for s, _ in after] == list(range(1, 21))  # steps 11-20 were run again
    assert after == before  # resumed from step 10's state: the same numbers, bit for bit
    # What generate and evaluate read is whole again, and from the last step.
    model = from_pretrained(cfg.run_dir)
    assert load_checkpoint(cfg.run_dir, *_model_and_optimizer(model.config))["step"] == 20


def test_both_checkpoints_damaged_is_one_clear_error(tiny_config):
    cfg = tiny_config()
    pretrain(cfg, **QUIET)
    truncate(cfg.run_dir / "train_state.pt")
    truncate(cfg.run_dir / "previous" / "model.safetensors")
    with pytest.raises(LmforgeError) as e:
        pretrain(cfg, resume=True, **QUIET)
    message = str(e.value)
    assert "\n" not in message
    assert "train_state.pt is truncated or corrupt" in message
    assert "previous/model.safetensors is truncated or corrupt" in message
    assert message.endswith("start again with --run.overwrite=true")


def _model_and_optimizer(config):
    model = Transformer(config)
    return model, build_optimizer(model, TrainConfig(), torch.device("cpu"))


class Crash(Exception):
    pass


def test_a_crash_anywhere_in_a_checkpoint_write_leaves_a_whole_pair(tmp_path, monkeypatch, capsys):
    config = ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model, optimizer = _model_and_optimizer(config)
    weights = {}
    for step in (1, 2, 3):  # different weights at every step
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
        if step < 3:
            save_checkpoint(tmp_path / "run", model, optimizer, step, {})

    # Step 3's save is cut short after each of its renames in turn (and after none).
    real_replace = os.replace
    outcomes = set()
    for renames in range(5):
        run_dir = tmp_path / f"crash{renames}"
        shutil.copytree(tmp_path / "run", run_dir)
        done = 0

        def replace(src, dst, renames=renames):
            nonlocal done
            if done == renames:
                raise Crash
            done += 1
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(Crash):
            save_checkpoint(run_dir, model, optimizer, 3, {})
            raise Crash  # the save completed (renames == 4)
        monkeypatch.setattr(os, "replace", real_replace)

        fresh, fresh_optimizer = _model_and_optimizer(config)
        step = load_checkpoint(run_dir, fresh, fresh_optimizer)["step"]
        assert step in (2, 3)
        outcomes.add(step)
        for name, tensor in fresh.state_dict().items():
            assert torch.equal(tensor, weights[step][name]), (renames, name)
        # A fallback put the whole pair back as the latest: the next resume needs no fallback.
        capsys.readouterr()
        assert load_checkpoint(run_dir, *_model_and_optimizer(config))["step"] == step
        assert "warning" not in capsys.readouterr().err
    assert outcomes == {2, 3}
