"""Multi-head self-attention.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
    MultiHead(X)      = Concat(head_1, ..., head_h) W^O
    head_i            = Attention(X W_i^Q, X W_i^K, X W_i^V)

Two interchangeable paths compute the same function: `explicit` writes the formula out,
`sdpa` calls PyTorch's fused `scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    dropout_p: float = 0.0,
    explicit: bool = False,
) -> torch.Tensor:
    """softmax(QK^T/sqrt(d_k))V over tensors shaped (batch, heads, time, head_dim).

    With `causal`, the queries are the last t_q positions of the t_k keys (a cached prefix
    comes first), so query i sees keys up to position t_k - t_q + i.
    """
    t_q, t_k = q.size(-2), k.size(-2)
    if not explicit:
        if not causal or t_q == t_k:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
        # SDPA's is_causal aligns queries to the first keys; pass the mask for the last ones.
        allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(t_k - t_q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    d_k = q.size(-1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d_k)
    if causal:
        future = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).triu(t_k - t_q + 1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


class MultiHeadAttention(nn.Module):
    def __init__(
        self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0, explicit=False
    ):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # W^Q, W^K, W^V for all heads
        self.out = nn.Linear(n_embd, n_embd, bias=bias)  # W^O
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.explicit = explicit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        heads = attention(
            q,
            k,
            v,
            causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            explicit=self.explicit,
        )
        concat = heads.transpose(1, 2).contiguous().view(b, t, c)  # Concat(head_1..head_h)
        return self.resid_dropout(self.out(concat))
