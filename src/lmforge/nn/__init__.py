"""Building blocks of the Transformer; nothing here knows about tasks, files or training."""

from lmforge.nn.attention import MultiHeadAttention, attention, attention_weights
from lmforge.nn.block import Block
from lmforge.nn.cache import KVCache, LayerCache
from lmforge.nn.mlp import MLP
from lmforge.nn.norm import RMSNorm, make_norm
from lmforge.nn.positions import apply_rope, rope_angles, sinusoids

__all__ = [
    "MLP",
    "Block",
    "KVCache",
    "LayerCache",
    "MultiHeadAttention",
    "RMSNorm",
    "apply_rope",
    "attention",
    "attention_weights",
    "make_norm",
    "rope_angles",
    "sinusoids",
]
