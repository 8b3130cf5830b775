"""Learning curves (`lmforge finetune TASK --learning-curve 10,25,50,100`): the task metric on
the records a model trained on and on validation records, against the share of training data.

A wide gap that stays as the share grows is overfitting (the model memorises what it sees);
two low curves that meet are underfitting (more data will not help; a bigger model or more
steps may). Each share is a seeded sample of the training records (stratified by label for
classification), fine-tuned with the same recipe and validated on the same records. The
figures go to OUTPUT/curve.json and OUTPUT/curve.png, each share's model to OUTPUT/share-N.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, check_new_directory, staged_directory, write_json
from lmforge.tasks.records import _rows
from lmforge.tasks.registry import get_task, load_task_model


def parse_shares(text: str) -> list[int]:
    try:
        shares = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise LmforgeError(
            f"--learning-curve takes percentages such as 10,25,50,100: {text!r}"
        ) from None
    if not shares or shares[0] < 1 or shares[-1] > 100:
        raise LmforgeError(f"--learning-curve percentages must lie in 1..100: {text!r}")
    return shares


def sample(rows: list[dict], share: int, label: str | None, seed: int = 0) -> list[dict]:
    """`share`% of the rows, the same of each label (at least one) when `label` is given."""
    rng = random.Random(seed)
    if label is None:
        picked = rng.sample(range(len(rows)), max(1, round(len(rows) * share / 100)))
        return [rows[i] for i in sorted(picked)]
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[str(row.get(label))].append(i)
    picked = []
    for name in sorted(by_label):
        indices = by_label[name]
        picked += rng.sample(indices, max(1, round(len(indices) * share / 100)))
    return [rows[i] for i in sorted(picked)]


def learning_curve(
    task_name: str,
    base: str | Path,
    train_path: str | Path,
    valid_path: str | Path,
    output: str | Path,
    shares: list[int],
    *,
    fields: dict[str, str] | None = None,
    overwrite: bool = False,
    finetune_kwargs: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    from lmforge.tasks.finetune import finetune

    cls = get_task(task_name)
    output = Path(output)
    check_new_directory(output, overwrite)
    cls.read(train_path, fields)  # every record is checked before anything is written
    valid = cls.read(valid_path, fields)
    rows = [row for _, row in _rows(Path(train_path))]
    label = (fields or {}).get("label", "label") if cls.name == "classification" else None
    metric = cls.metric
    points = []
    with staged_directory(output) as staging:
        for share in shares:
            part = sample(rows, share, label)
            data = staging / f"share-{share}" / "train.jsonl"
            data.parent.mkdir(parents=True)
            data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
            log(f"{share}% of the training records: {len(part)}")
            finetune(
                task_name, base, data, staging / f"share-{share}" / "model", valid_path,
                fields=fields, log=log, **(finetune_kwargs or {}),
            )  # fmt: skip
            task, model = load_task_model(cls.name, staging / f"share-{share}" / "model")
            seen = cls.read(data, fields)
            points.append(
                {
                    "share": share,
                    "records": len(part),
                    "train": task.score(task.predict(model, seen), seen)[metric],
                    "valid": task.score(task.predict(model, valid), valid)[metric],
                }
            )
        report = {"task": cls.name, "metric": metric, "points": points}
        write_json(staging / "curve.json", report)
        _plot(points, metric, staging / "curve.png")
    return report


def _plot(points: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [p["records"] for p in points]
    ax.plot(x, [p["train"] for p in points], "o-", label="training records (seen)")
    ax.plot(x, [p["valid"] for p in points], "s-", label="validation records")
    for p in points:
        ax.annotate(f"{p['share']}%", (p["records"], p["valid"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("training records")
    ax.set_ylabel(metric)
    ax.set_title("learning curve: a lasting gap is overfitting, two low curves underfitting")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
