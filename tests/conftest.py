"""Shared fixtures: tiny corpora and configs so every test runs in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import build_config

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with the reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


def write_corpus(folder):
    """Three small .txt documents in `folder` (one is held out as validation)."""
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"doc{i}.txt").write_text(TINY_TEXT.replace("First", f"Doc{i} First"), "utf-8")
    return folder


@pytest.fixture
def corpus_dir(tmp_path):
    return write_corpus(tmp_path / "corpus")


def tiny_overrides(corpus, out_dir, **extra) -> dict:
    overrides = {
        "data.corpus": [str(corpus)],
        "data.valid_fraction": 0.34,
        "model.n_layer": 2,
        "model.n_head": 2,
        "model.n_embd": 32,
        "model.block_size": 32,
        "train.batch_size": 4,
        "train.max_steps": 20,
        "train.warmup_steps": 5,
        "train.eval_interval": 10,
        "train.eval_batches": 2,
        "train.log_interval": 1,
        "train.learning_rate": 3e-3,
        "train.precision": "fp32",
        "train.device": "cpu",
        "run.out_dir": str(out_dir),
        "run.name": "tiny",
        "run.sample_tokens": 20,
    }
    overrides.update(extra)
    return overrides


@pytest.fixture
def tiny_config(corpus_dir, tmp_path):
    def make(**extra):
        return build_config({}, tiny_overrides(corpus_dir, tmp_path / "runs", **extra))

    return make
