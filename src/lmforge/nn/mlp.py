"""Position-wise feed-forward network: Linear -> GELU -> Linear."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, n_embd: int, hidden: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(n_embd, hidden, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.down = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.act(self.up(x))))
