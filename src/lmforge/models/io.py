"""A model directory: `config.json` (the run's resolved config) and `model.safetensors`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path
from lmforge.models.gpt import GPT

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_weights(model: GPT, directory: str | Path, metadata: dict[str, str] | None = None):
    with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp), metadata=metadata)


def read_model_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise LmforgeError(f"{directory} is not a model directory: {CONFIG_FILE} is missing")
    try:
        return ModelConfig.model_validate(json.loads(path.read_text("utf-8"))["model"])
    except (ValueError, KeyError) as e:
        raise LmforgeError(f"{path} is corrupt or not an lmforge config ({e}); retrain") from None


def load_weights(model: GPT, directory: str | Path) -> dict[str, str]:
    """Fill `model` from the directory's safetensors file; returns the file's metadata."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise LmforgeError(f"no {WEIGHTS_FILE} in {directory}; the run has not saved weights yet")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise LmforgeError(
            f"{path} is truncated or corrupt ({str(e).splitlines()[0]}); "
            "delete it and retrain, or resume from a good copy"
        ) from None
    if missing or unexpected:
        raise LmforgeError(
            f"{path} does not match the model in {CONFIG_FILE} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return metadata


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> GPT:
    model = GPT(read_model_config(directory))
    load_weights(model, directory)
    return model.to(device).eval()
