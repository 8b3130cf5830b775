"""Inference: loading a trained model, choosing tokens, generating, streaming text, and
serving many requests at once (continuous batching)."""

from lmforge.infer.batching import Request, Scheduler
from lmforge.infer.generate import Generation, StaticCache, generate
from lmforge.infer.loading import load_model_and_tokenizer
from lmforge.infer.sampling import Sampling
from lmforge.infer.stream import TextStream

__all__ = [
    "Generation",
    "Request",
    "Sampling",
    "Scheduler",
    "StaticCache",
    "TextStream",
    "generate",
    "load_model_and_tokenizer",
]
