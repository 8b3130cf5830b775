"""k-fold cross-validation: stratified and grouped fold assignment (checked against
scikit-learn's own splitters' guarantees), and K fine-tunings through the CLI."""

import json
from collections import Counter

import pytest

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.tasks.crossval import assign_folds
from tests.tasks.conftest import sentiment_records, write_jsonl


def test_stratified_folds_hold_each_class_in_proportion():
    rows = [{"label": "a"}] * 30 + [{"label": "b"}] * 12 + [{"label": "c"}] * 7
    folds = assign_folds(rows, 3, label="label")
    for name, n in Counter(r["label"] for r in rows).items():
        per_fold = Counter(f for r, f in zip(rows, folds) if r["label"] == name)
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, name  # as even as can be
        assert sum(per_fold.values()) == n
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert assign_folds(rows, 3, label="label") == folds  # seeded
    with pytest.raises(LmforgeError, match="larger than the smallest class \\('c' has 7"):
        assign_folds(rows, 8, label="label")


def test_grouped_folds_never_split_a_group():
    rows = [{"play": p} for p, n in [("Hamlet", 9), ("Lear", 7), ("Tempest", 4), ("Errors", 3),
                                      ("Shrew", 3)] for _ in range(n)]  # fmt: skip
    folds = assign_folds(rows, 2, group="play")
    for play in {r["play"] for r in rows}:
        assert len({f for r, f in zip(rows, folds) if r["play"] == play}) == 1, play
    # largest first onto the fold with fewer records: 9+3 and 7+4+3 (greedy, not the 13+13 optimum)
    assert sorted(Counter(folds).values()) == [12, 14]
    with pytest.raises(LmforgeError, match="5 groups of 'play' cannot fill 6 folds"):
        assign_folds(rows, 6, group="play")
    with pytest.raises(LmforgeError, match="no field 'speaker'"):
        assign_folds(rows, 2, group="speaker")


def test_k_fine_tunings_each_tested_on_its_unseen_fold(bases, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(96, 0))
    out = tmp_path / "cv"
    args = ["finetune", "sentiment", "--model", str(bases["encoder"]), "--train", train]
    args += ["--output", str(out), "--folds", "3", "--epochs", "6", "--no-progress"]
    fast = ["--train.learning_rate=3e-3", "--train.batch_size=8", "--train.device=cpu"]
    fast += ["--train.head_lr_scale=1"]  # a random tiny base at 3e-3: no faster head
    assert main([*args, *fast]) == 0
    printed = capsys.readouterr().out
    assert "mean ± std accuracy" in printed
    report = json.loads((out / "folds.json").read_text())
    assert report["folds"] == 3 and len(report["per_fold"]) == 3
    assert sum(r["test_records"] for r in report["per_fold"]) == 96
    assert sorted(Counter(report["assignment"]).values()) == [32, 32, 32]
    accuracies = [r["accuracy"] for r in report["per_fold"]]
    assert report["mean"]["accuracy"] == pytest.approx(sum(accuracies) / 3)
    assert report["mean"]["accuracy"] >= 0.8  # the adjective decides; chance is 0.5
    for f in (1, 2, 3):  # each fold's model and its data are kept
        assert (out / f"fold-{f}" / "model" / "model.safetensors").is_file()
        test = (out / f"fold-{f}" / "data" / "test.jsonl").read_text().splitlines()
        assert len(test) == 32
    # bad input: nothing written
    assert main([*args, *fast]) == 2 and "already exists" in capsys.readouterr().err
    bad = [a if a != str(out) else str(tmp_path / "new") for a in args]
    assert main([*bad, "--valid", train]) == 2
    assert "drop --valid" in capsys.readouterr().err
    assert main([*bad[:-5], "--folds", "60", "--no-progress"]) == 2  # 48 records per class
    assert "larger than the smallest class" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_learning_curve_shares_and_picture(bases, tmp_path, capsys):
    from lmforge.tasks.curves import parse_shares, sample

    rows = [{"label": "a"}] * 40 + [{"label": "b"}] * 10
    part = sample(rows, 20, "label")
    assert Counter(r["label"] for r in part) == {"a": 8, "b": 2}  # stratified
    assert parse_shares("50, 10,100") == [10, 50, 100]
    with pytest.raises(LmforgeError, match="1..100"):
        parse_shares("0,120")

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(96, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_records(24, 1))
    out = tmp_path / "curve"
    args = ["finetune", "sentiment", "--model", str(bases["encoder"]), "--train", train]
    args += ["--valid", valid, "--output", str(out), "--learning-curve", "25,100"]
    args += ["--epochs", "4", "--no-progress", "--train.learning_rate=3e-3"]
    args += ["--train.batch_size=8", "--train.device=cpu"]
    assert main(args) == 0
    report = json.loads((out / "curve.json").read_text())
    assert [p["records"] for p in report["points"]] == [24, 96]
    full = report["points"][-1]
    assert full["valid"] >= 0.8 and full["train"] >= full["valid"] - 0.05
    png = (out / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    no_valid = ["finetune", "sentiment", "--model", str(bases["encoder"]), "--train", train]
    no_valid += ["--output", str(tmp_path / "n"), "--learning-curve", "10"]
    assert main(no_valid) == 2 and not (tmp_path / "n").exists()
    assert "needs --valid" in capsys.readouterr().err
