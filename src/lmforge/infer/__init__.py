"""Inference: loading a trained model and generating from it."""

from lmforge.infer.generate import generate, sample_next
from lmforge.infer.loading import load_model_and_tokenizer

__all__ = ["generate", "load_model_and_tokenizer", "sample_next"]
