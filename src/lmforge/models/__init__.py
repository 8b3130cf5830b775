"""Architectures assembled from `lmforge.nn`, and model-directory io."""

from lmforge.models.gpt import GPT
from lmforge.models.io import from_pretrained, load_weights, save_weights

__all__ = ["GPT", "from_pretrained", "load_weights", "save_weights"]
