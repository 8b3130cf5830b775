"""k-fold cross-validation of a fine-tuning recipe (`lmforge finetune TASK --folds K`).

The training records are cut into K folds. Classification folds are stratified: each label's
records are dealt round-robin over the folds in a seeded order, so every fold holds each class
in proportion. With `group_by` a field (a play, a speaker, a source document), all records
of a group go to one fold, so related records never straddle a training part and its test
fold; groups are placed largest first on the fold with the fewest records. Fold f is then the
test set of a fine-tuning on the other K - 1 folds, which holds out 10% of its own records for
early stopping as any fine-tuning without --valid does, so the test fold never chooses a
step. The result is the per-fold metrics, their mean and standard deviation, and the
assignment, written to OUTPUT/folds.json beside OUTPUT/fold-1 ... fold-K.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.fileio import check_new_directory, staged_directory, write_json
from lmforge.tasks.records import _rows
from lmforge.tasks.registry import get_task, load_task_model


def assign_folds(
    rows: list[dict], k: int, seed: int = 0, label: str | None = None, group: str | None = None
) -> list[int]:
    """The fold (0 .. k-1) of each row: grouped by the field `group` when given, else
    stratified by the field `label` when given, else dealt in a seeded order."""
    if k < 2:
        raise LmforgeError(f"--folds needs at least 2 folds, not {k}")
    rng = random.Random(seed)
    folds = [0] * len(rows)
    if group is not None:
        members: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            if group not in row:
                raise LmforgeError(f"record {i + 1} has no field '{group}' to group folds by")
            members[str(row[group])].append(i)
        if len(members) < k:
            raise LmforgeError(
                f"{len(members)} groups of '{group}' cannot fill {k} folds; use --folds "
                f"{len(members)} or fewer"
            )
        sizes = [0] * k
        order = sorted(members, key=lambda g: (-len(members[g]), g))
        for g in order:
            f = min(range(k), key=lambda j: (sizes[j], j))
            for i in members[g]:
                folds[i] = f
            sizes[f] += len(members[g])
        return folds
    if label is not None:
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_label[str(row.get(label))].append(i)
        smallest = min(by_label, key=lambda x: len(by_label[x]))
        if len(by_label[smallest]) < k:
            raise LmforgeError(
                f"--folds {k} is larger than the smallest class ('{smallest}' has "
                f"{len(by_label[smallest])} records); use --folds {len(by_label[smallest])} "
                "or fewer"
            )
        start = 0
        for name in sorted(by_label):
            indices = by_label[name][:]
            rng.shuffle(indices)
            for j, i in enumerate(indices):
                folds[i] = (start + j) % k
            start += len(indices)  # the next class starts where this one ended
        return folds
    if len(rows) < k:
        raise LmforgeError(f"{len(rows)} records cannot fill {k} folds")
    order = list(range(len(rows)))
    rng.shuffle(order)
    for j, i in enumerate(order):
        folds[i] = j % k
    return folds


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def cross_validate(
    task_name: str,
    base: str | Path,
    train_path: str | Path,
    output: str | Path,
    k: int,
    *,
    group_by: str | None = None,
    fields: dict[str, str] | None = None,
    overwrite: bool = False,
    finetune_kwargs: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """K fine-tunings of `base`, each tested on the fold it did not see; returns (and writes
    to OUTPUT/folds.json) the per-fold metrics, their mean and standard deviation."""
    from lmforge.tasks.finetune import finetune

    cls = get_task(task_name)
    if cls.name not in ("classification", "qa"):
        raise LmforgeError(f"--folds is for classification and qa, not {cls.name}")
    output = Path(output)
    check_new_directory(output, overwrite)
    cls.read(train_path, fields)  # every record is checked before anything is written
    rows = [row for _, row in _rows(Path(train_path))]
    label = (fields or {}).get("label", "label") if cls.name == "classification" else None
    folds = assign_folds(rows, k, label=None if group_by else label, group=group_by)
    results = []
    with staged_directory(output) as staging:
        for f in range(k):
            data = staging / f"fold-{f + 1}" / "data"
            train = _write_jsonl(data / "train.jsonl", [r for r, g in zip(rows, folds) if g != f])
            test = _write_jsonl(data / "test.jsonl", [r for r, g in zip(rows, folds) if g == f])
            log(f"fold {f + 1}/{k}: {sum(g != f for g in folds)} training, "
                f"{sum(g == f for g in folds)} test records")  # fmt: skip
            summary = finetune(
                task_name, base, train, staging / f"fold-{f + 1}" / "model", None,
                fields=fields, log=log, **(finetune_kwargs or {}),
            )  # fmt: skip
            task, model = load_task_model(cls.name, staging / f"fold-{f + 1}" / "model")
            records = cls.read(test, fields)
            scores = task.score(task.predict(model, records), records)
            results.append(
                {
                    "fold": f + 1,
                    "train_records": sum(g != f for g in folds),
                    "test_records": len(records),
                    "best_step": summary["best_step"],
                    **{m: v for m, v in scores.items() if isinstance(v, float)},
                }
            )
        metrics = [m for m, v in results[0].items() if isinstance(v, float)]
        report = {
            "task": cls.name,
            "folds": k,
            "grouped_by": group_by,
            "stratified_by": None if group_by else label,
            "mean": {m: statistics.fmean(r[m] for r in results) for m in metrics},
            "std": {m: statistics.stdev(r[m] for r in results) for m in metrics},
            "per_fold": results,
            "assignment": folds,  # the fold (1-based) of each training record, in file order
        }
        report["assignment"] = [f + 1 for f in folds]
        write_json(staging / "folds.json", report)
    return report
