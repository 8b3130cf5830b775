import pytest

from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain


def test_time_budget_stops_early_with_the_schedule_decayed(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 100000, "train.max_minutes": 0.02})
    result = pretrain(cfg, progress=False, log=lambda s: None)
    assert result["stopped_by_time_budget"] and 0 < result["steps"] < 100000
    rows = [r for r in MetricsLog.read(cfg.run_dir / "metrics.jsonl") if r["event"] == "train"]
    floor = cfg.train.learning_rate * cfg.train.min_lr_ratio
    assert rows[-1]["lr"] == pytest.approx(floor, rel=0.05)
