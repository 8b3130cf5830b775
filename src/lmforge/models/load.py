"""Loading a model directory of either kind: the one place that knows both formats, so that
the lmforge format (models/io.py) and the Hugging Face tables (models/hf.py, which builds on
io) do not import each other."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.models.hf import load_hf
from lmforge.models.io import is_hf_directory, load_weights, read_model_config
from lmforge.models.transformer import Transformer


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """A model from an lmforge or a Hugging Face directory, in eval mode."""
    if is_hf_directory(directory):
        model = load_hf(directory)
    else:
        model = Transformer(read_model_config(directory))
        load_weights(model, directory)
    return model.to(device).eval()
