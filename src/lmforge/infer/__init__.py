"""Inference: loading a trained model, choosing tokens, generating, streaming text."""

from lmforge.infer.generate import Generation, StaticCache, generate
from lmforge.infer.loading import load_model_and_tokenizer
from lmforge.infer.sampling import Sampling
from lmforge.infer.stream import TextStream

__all__ = [
    "Generation",
    "Sampling",
    "StaticCache",
    "TextStream",
    "generate",
    "load_model_and_tokenizer",
]
