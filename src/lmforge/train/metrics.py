"""Metrics as JSON lines (one object per event) and the loss-curve plot drawn from them;
optionally the same figures as TensorBoard scalars in RUN_DIR/tensorboard/."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, write_text

TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> type:
    """torch's SummaryWriter, which needs the optional tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LmforgeError(
            "train.tensorboard is on but the tensorboard package is not installed; "
            "pip install tensorboard, or set --train.tensorboard=false"
        ) from None
    return SummaryWriter


def tensorboard_writer(directory: str | Path, purge_step: int | None = None):
    """A SummaryWriter into `directory`. Events from an earlier session at `purge_step` or
    later are hidden by TensorBoard, as a resume drops the metrics lines it will redo."""
    return require_tensorboard()(str(directory), purge_step=purge_step)


def add_scalars(writer, record: dict) -> None:
    """Each number of a metrics record as the scalar '<event>/<name>' at its step."""
    event, step = record.get("event", "metrics"), record.get("step", 0)
    for name, value in record.items():
        if name not in {"event", "step"} and isinstance(value, int | float):
            writer.add_scalar(f"{event}/{name}", value, step)
    writer.flush()  # on disk as soon as the JSON line is, in case the run is killed


class MetricsLog:
    def __init__(self, path: str | Path, resume_step: int | None = None, tensorboard: bool = False):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be redone.
            kept = [ln for ln in self.read(self.path) if ln.get("step", 0) <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None:
            write_text(self.path, "")
        self.writer = None
        if tensorboard:  # a new run hides all earlier events, a resumed one those it redoes
            purge = 0 if resume_step is None else resume_step + 1
            self.writer = tensorboard_writer(self.path.parent / TENSORBOARD_DIR, purge)
            weakref.finalize(self, self.writer.close)

    def write(self, **record) -> None:
        self.append(self.path, **record)
        if self.writer is not None:
            add_scalars(self.writer, record)

    @staticmethod
    def append(path: str | Path, **record) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """All complete records; a line cut short by a crash is skipped."""
        rows = []
        for line in Path(path).read_text("utf-8").split("\n"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = MetricsLog.read(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("event") == "train"]
    # fine-tuning evaluates a task metric instead of the loss; those points are not drawn
    valid = [(r["step"], r["loss"]) for r in rows if r.get("event") == "eval" and "loss" in r]
    final = [(r["step"], r["loss"]) for r in rows if r.get("event") == "final_eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=False), label="train", lw=1)
    if valid:
        ax.plot(*zip(*valid, strict=False), "o-", label="validation (sampled windows)")
    if final:
        ax.plot(*zip(*final, strict=False), "*", ms=12, label="validation (whole split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
