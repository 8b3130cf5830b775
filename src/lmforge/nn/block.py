"""A pre-norm Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.nn.attention import MultiHeadAttention
from lmforge.nn.mlp import MLP


class Block(nn.Module):
    def __init__(
        self,
        n_embd: int,
        n_head: int,
        mlp_hidden: int,
        bias: bool = True,
        dropout: float = 0.0,
        explicit_attention: bool = False,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = MultiHeadAttention(n_embd, n_head, bias, dropout, explicit_attention)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, mlp_hidden, bias, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
