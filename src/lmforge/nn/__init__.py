"""Building blocks of the Transformer; nothing here knows about tasks, files or training."""

from lmforge.nn.attention import MultiHeadAttention, attention
from lmforge.nn.block import Block
from lmforge.nn.mlp import MLP

__all__ = ["MLP", "Block", "MultiHeadAttention", "attention"]
