"""Metrics as JSON lines (one object per event) and the loss-curve plot drawn from them."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.fileio import atomic_path, write_text


class MetricsLog:
    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be redone.
            kept = [ln for ln in self.read(self.path) if ln.get("step", 0) <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None:
            write_text(self.path, "")

    def write(self, **record) -> None:
        self.append(self.path, **record)

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
    valid = [(r["step"], r["loss"]) for r in rows if r.get("event") == "eval"]
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
