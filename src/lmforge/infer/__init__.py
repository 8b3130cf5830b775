"""Inference: generation from a trained model."""

from lmforge.infer.generate import generate, sample_next

__all__ = ["generate", "sample_next"]
