"""TensorBoard events hold the figures of metrics.jsonl; without the package, one clear error."""

import sys
import time

import pytest

from lmforge.errors import LmforgeError
from lmforge.train.metrics import MetricsLog
from lmforge.train.pretrain import pretrain


def scalars(directory, wall_time=False) -> dict[str, list[tuple]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    points = {
        tag: [(e.step, e.wall_time if wall_time else e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
    return {tag: p for tag, p in points.items() if p}  # a purged tag stays listed, empty


def from_jsonl(path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for row in MetricsLog.read(path):
        for name, value in row.items():
            if name not in {"event", "step"} and isinstance(value, int | float):  # not samples
                out.setdefault(f"{row['event']}/{name}", []).append((row["step"], value))
    return out


def assert_same(events, expected):
    assert events.keys() == expected.keys()
    for tag, points in expected.items():
        assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
        for (_, got), (_, want) in zip(events[tag], points):
            assert got == pytest.approx(want, rel=1e-6), tag  # stored as float32


def test_pretrain_writes_the_metrics_as_tensorboard_scalars(tiny_config):
    pytest.importorskip("tensorboard")
    cfg = tiny_config(**{"train.tensorboard": True})
    pretrain(cfg, progress=False, log=lambda s: None)
    events = scalars(cfg.run_dir / "tensorboard")
    assert {"train/loss", "train/lr", "eval/bpb", "final_eval/loss"} <= events.keys()
    assert_same(events, from_jsonl(cfg.run_dir / "metrics.jsonl"))


def test_a_resume_hides_the_events_of_the_steps_it_redoes(tiny_config):
    pytest.importorskip("tensorboard")
    cfg = tiny_config(**{"train.tensorboard": True})
    pretrain(cfg, progress=False, log=lambda s: None)
    # Damage the step-20 checkpoint: the resume goes back to step 10 and redoes 11-20, whose
    # first events TensorBoard must no longer show.
    state = cfg.run_dir / "train_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    resumed_at = time.time()
    pretrain(cfg, resume=True, progress=False, log=lambda s: None)
    events = scalars(cfg.run_dir / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == list(range(1, 21))
    assert [s for s, _ in events["final_eval/loss"]] == [20]
    assert_same(events, from_jsonl(cfg.run_dir / "metrics.jsonl"))
    written = scalars(cfg.run_dir / "tensorboard", wall_time=True)["train/loss"]
    assert all((t >= resumed_at) == (s > 10) for s, t in written)  # 11-20 are the new ones


def test_asking_for_tensorboard_without_the_package_is_one_clear_error(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    cfg = tiny_config(**{"train.tensorboard": True})
    with pytest.raises(LmforgeError, match=r"pip install tensorboard") as e:
        pretrain(cfg, progress=False, log=lambda s: None)
    assert "\n" not in str(e.value)
    assert not cfg.run_dir.exists()  # before any work
