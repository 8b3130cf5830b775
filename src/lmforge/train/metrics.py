"""Metrics as JSON lines (one object per event) and the loss-curve plot drawn from them."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be redone.
            kept = [ln for ln in self.read(self.path) if ln.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        elif resume_step is None:
            self.path.write_text("", encoding="utf-8")

    def write(self, **record) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        return [json.loads(ln) for ln in Path(path).read_text("utf-8").splitlines() if ln.strip()]


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fileio import atomic_path

    rows = MetricsLog.read(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("event") == "train"]
    valid = [(r["step"], r["loss"]) for r in rows if r.get("event") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=False), label="train", lw=1)
    if valid:
        ax.plot(*zip(*valid, strict=False), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
