"""The configurable Transformer, its heads, model directories and Hugging Face interop."""

from lmforge.models.heads import BodyOutput, mean_pool
from lmforge.models.hf import load_hf, save_pretrained
from lmforge.models.io import load_weights, save_model_dir, save_weights
from lmforge.models.load import from_pretrained
from lmforge.models.transformer import Transformer

# The default ModelConfig is GPT-2 shaped; the name stays for the pretraining code and users.
GPT = Transformer

__all__ = [
    "GPT",
    "BodyOutput",
    "Transformer",
    "from_pretrained",
    "load_hf",
    "load_weights",
    "mean_pool",
    "save_model_dir",
    "save_pretrained",
    "save_weights",
]
