"""Position-wise feed-forward network.

plain: down(act(up(x)))              GPT-2, BERT, BART (act = GELU)
gated: down(act(gate(x)) * up(x))    Llama (act = SiLU: SwiGLU; Shazeer 2020)
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "gelu": nn.GELU,  # exact, with erf
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    def __init__(
        self,
        n_embd: int,
        hidden: int,
        bias: bool = True,
        dropout: float = 0.0,
        activation: str = "gelu_tanh",
        gated: bool = False,
    ):
        super().__init__()
        self.gate = nn.Linear(n_embd, hidden, bias=bias) if gated else None
        self.up = nn.Linear(n_embd, hidden, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.down = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.dropout(self.down(self.act(self.up(x))))
        return self.dropout(self.down(self.act(self.gate(x)) * self.up(x)))
