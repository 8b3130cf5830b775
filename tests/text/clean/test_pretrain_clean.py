"""`data.clean: RECIPE` in a pretraining config: the training split is cleaned before the
tokenizer sees it, and the report is kept in the run directory."""

from __future__ import annotations

import json
import shutil

import pytest

from lmforge.errors import LmforgeError
from lmforge.train.pretrain import pretrain


def test_pretraining_cleans_its_training_split(tiny_config, corpus_dir, tmp_path):
    shutil.copy(corpus_dir / "doc0.txt", corpus_dir / "dup.txt")  # train: doc0, doc1, dup
    recipe = tmp_path / "dedup.yaml"
    recipe.write_text("steps:\n  - normalize: {}\n  - exact_dedup: {}\n")
    cfg = tiny_config(**{"data.clean": str(recipe), "train.max_steps": 2})
    logged = []
    pretrain(cfg, progress=False, log=logged.append)
    report = json.loads((cfg.run_dir / "clean-report.json").read_text())
    assert report["docs_in"] == 3 and report["docs_out"] == 2
    assert report["steps"][1]["removed"] == {"exact_duplicate": 1}
    assert any("2 train documents kept" in line for line in logged)


def test_a_recipe_that_removes_everything_is_refused(tiny_config, tmp_path):
    recipe = tmp_path / "strict.yaml"
    recipe.write_text("steps:\n  - gopher_quality: {min_words: 1000000}\n")
    cfg = tiny_config(**{"data.clean": str(recipe)})
    with pytest.raises(LmforgeError, match="removed every training document"):
        pretrain(cfg, progress=False, log=lambda s: None)
    assert not cfg.run_dir.exists()
