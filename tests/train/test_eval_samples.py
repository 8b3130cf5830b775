"""Pretraining shows a sample at each periodic evaluation, and derives the accumulation from
a total batch size in tokens."""

import pytest

from lmforge.errors import LmforgeError
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain

QUIET = {"progress": False, "log": lambda s: None}


def rows(cfg, event):
    return [r for r in MetricsLog.read(cfg.run_dir / "metrics.jsonl") if r["event"] == event]


def test_each_periodic_evaluation_logs_a_sample_without_touching_training(tiny_config, capsys):
    with_samples = tiny_config(**{"model.dropout": 0.1, "run.eval_sample_tokens": 8})
    pretrain(with_samples, **QUIET)
    samples = rows(with_samples, "sample")
    assert [s["step"] for s in samples] == [10]  # eval_interval 10 of 20 steps
    assert samples[0]["text"].startswith(with_samples.run.sample_prompt)
    assert len(samples[0]["text"]) > len(with_samples.run.sample_prompt)
    assert "step 10: sample" in capsys.readouterr().out
    # the same run without samples trains identically (dropout draws from the global RNG)
    without = tiny_config(
        **{"model.dropout": 0.1, "run.eval_sample_tokens": 0, "run.name": "no-samples"}
    )
    pretrain(without, **QUIET)
    assert not rows(without, "sample")
    assert [r["loss"] for r in rows(without, "train")] == [
        r["loss"] for r in rows(with_samples, "train")
    ]


def test_batch_tokens_sets_the_accumulation(tiny_config):
    # batch 4 x block 32 = 128 tokens per micro-batch; 512 per step is 4 micro-batches,
    # the same training as asking for them directly
    by_tokens = tiny_config(**{"train.batch_tokens": 512, "train.max_steps": 3})
    pretrain(by_tokens, **QUIET)
    direct = tiny_config(
        **{"train.grad_accum_steps": 4, "train.max_steps": 3, "run.name": "direct"}
    )  # (batch_tokens takes the place of any grad_accum_steps, a preset's say)
    pretrain(direct, **QUIET)
    got = [(r["loss"], r["tokens_per_s"] > 0) for r in rows(by_tokens, "train")]
    assert got == [(r["loss"], True) for r in rows(direct, "train")]
    assert len(got) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"train.batch_tokens": 500}, r"not a multiple of the 128 tokens.*such as 384"),
        ({"train.batch_tokens": 64}, r"not a multiple of the 128 tokens.*such as 128"),
    ],
)
def test_batch_tokens_that_do_not_fit_are_refused_before_anything_is_written(
    tiny_config, extra, message
):
    cfg = tiny_config(**extra)
    with pytest.raises(LmforgeError, match=message):
        pretrain(cfg, **QUIET)
    assert not cfg.run_dir.exists()


def test_a_non_finite_loss_names_the_step_and_the_last_checkpoint(tiny_config, monkeypatch):
    from lmforge.train import trainer

    calls = []
    real = trainer.causal_lm_loss

    def fails_at_step_15(logits, targets, **kwargs):
        calls.extend([1] if logits.requires_grad else [])  # training steps, not evaluations
        loss = real(logits, targets, **kwargs)
        return loss * float("nan") if len(calls) == 15 else loss

    monkeypatch.setattr(trainer, "causal_lm_loss", fails_at_step_15)
    cfg = tiny_config(**{"run.eval_sample_tokens": 0})
    with pytest.raises(LmforgeError, match=r"nan at step 15; the last checkpoint, of step 10"):
        pretrain(cfg, **QUIET)
