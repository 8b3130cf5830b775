from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain


def test_time_budget_stops_early_with_the_schedule_decayed(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 100000, "train.max_minutes": 0.05})
    result = pretrain(cfg, progress=False, log=lambda s: None)
    assert result["stopped_by_time_budget"] and 0 < result["steps"] < 100000
    rows = [r for r in MetricsLog.read(cfg.run_dir / "metrics.jsonl") if r["event"] == "train"]
    peak, floor = cfg.train.learning_rate, cfg.train.learning_rate * cfg.train.min_lr_ratio
    # By steps alone the LR would still be at its peak (step << max_steps); following the
    # clock it has decayed most of the way by the deadline. The bound allows a slow or busy
    # machine: the last step starts at least half-way through the budget.
    assert floor <= rows[-1]["lr"] < 0.5 * peak
    after_warmup = [r["lr"] for r in rows if r["step"] > cfg.train.warmup_steps]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:]))


def test_time_budget_spans_resumes(tiny_config):
    import torch

    cfg = tiny_config(**{"train.max_steps": 4, "train.max_minutes": 5})
    pretrain(cfg, progress=False, log=lambda s: None)
    path = cfg.run_dir / "train_state.pt"
    state = torch.load(path, weights_only=True)
    assert 0 < state["elapsed_s"] < 300
    state["elapsed_s"] = 301.0  # as if the earlier sessions had used the whole budget
    torch.save(state, path)
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 100})})
    result = pretrain(longer, resume=True, progress=False, log=lambda s: None)
    assert result["stopped_by_time_budget"] and result["steps"] == 5
