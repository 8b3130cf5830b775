"""Multi-head attention: self and cross, causal and bidirectional, MHA, GQA and MQA.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
    MultiHead(X)      = Concat(head_1, ..., head_h) W^O
    head_i            = Attention(X W_i^Q, X W_i^K, X W_i^V)

Two interchangeable paths compute the same function: `explicit` writes the formula out,
`sdpa` calls PyTorch's fused `scaled_dot_product_attention`.

Grouped-query attention shares each key/value head among n_head / n_kv_head query heads
(multi-query: one key/value head for all). Keys and values are kept (and cached) with their
own n_kv_head heads and repeated to n_head only for the product.

Masks are boolean, True where a query may attend to a key, broadcastable to
(batch, heads, t_q, t_k). A query with no key left (a padding row) gets zeros on both paths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.nn.cache import LayerCache
from lmforge.nn.positions import apply_rope


def repeat_kv(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(b, n_kv_head, t, d) -> (b, n_head, t, d): kv head j serves query heads j*g .. j*g+g-1."""
    groups = n_head // x.size(1)
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def allowed_keys(
    t_q: int, t_k: int, causal: bool, mask: torch.Tensor | None, device
) -> torch.Tensor | None:
    """The combined boolean mask; with `causal`, the queries are the last t_q of the t_k
    positions (a cached prefix comes first), so query i sees keys up to t_k - t_q + i."""
    if causal:
        past = torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(t_k - t_q)
        return past if mask is None else mask & past
    return mask


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, causal: bool = False, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(QK^T / sqrt(d_k)), shaped (batch, heads, t_q, t_k); masked keys weigh 0."""
    k = repeat_kv(k, q.size(1))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    allowed = allowed_keys(q.size(-2), k.size(-2), causal, mask, q.device)
    if allowed is None:
        return F.softmax(scores, dim=-1)
    weights = F.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights.masked_fill(~allowed, 0.0)  # a row with no allowed key is NaN until here


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    explicit: bool = False,
) -> torch.Tensor:
    """softmax(QK^T/sqrt(d_k))V over (batch, heads, time, head_dim); k and v may have fewer
    heads than q (grouped-query)."""
    if explicit:
        weights = attention_weights(q, k, causal, mask)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        return weights @ repeat_kv(v, q.size(1))
    k, v = repeat_kv(k, q.size(1)), repeat_kv(v, q.size(1))
    t_q, t_k = q.size(-2), k.size(-2)
    if mask is None and (not causal or t_q == t_k):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    # SDPA's is_causal aligns queries to the first keys, and cannot take a mask as well.
    allowed = allowed_keys(t_q, t_k, causal, mask, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


class MultiHeadAttention(nn.Module):
    """Self-attention (keys and values from x) or cross-attention (from `context`)."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        causal: bool = False,
        explicit: bool = False,
    ):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        self.head_dim = head_dim or n_embd // n_head
        assert self.n_head % self.n_kv_head == 0, "n_head must be a multiple of n_kv_head"
        self.q = nn.Linear(n_embd, self.n_head * self.head_dim, bias=bias)  # W^Q, all heads
        self.k = nn.Linear(n_embd, self.n_kv_head * self.head_dim, bias=bias)  # W^K
        self.v = nn.Linear(n_embd, self.n_kv_head * self.head_dim, bias=bias)  # W^V
        self.out = nn.Linear(self.n_head * self.head_dim, n_embd, bias=bias)  # W^O
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.causal = causal
        self.explicit = explicit

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerCache | None = None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (batch, t, n_embd) -> (output (batch, t, n_embd), weights or None).

        `rope` = (cos, sin) rotates queries and keys of self-attention. With a `cache`,
        self-attention appends this step's keys and values to the cached ones, and
        cross-attention computes its keys and values from `context` once and reuses them.
        """
        b, t, _ = x.shape
        q = self._split(self.q(x), self.n_head)
        # a cache that packs several sequences in one row attends itself (lmforge.nn.cache)
        ragged = cache is not None and context is None and cache.attend is not None
        if context is not None and cache is not None and cache.cross is not None:
            k, v = cache.cross
        else:
            source = x if context is None else context
            k = self._split(self.k(source), self.n_kv_head)
            v = self._split(self.v(source), self.n_kv_head)
            if rope is not None and context is None:
                k = apply_rope(k, *rope)
            if cache is not None and context is not None:
                cache.cross = (k, v)
            elif cache is not None and not ragged:
                k, v = cache.append(k, v)
        if rope is not None and context is None:
            q = apply_rope(q, *rope)
        # A cache kept in another precision (fp32 keys and values for bf16 decode weights,
        # lmforge.infer.precision) sets the attention's: bf16 attention is slow on many CPUs.
        compute_dtype = q.dtype
        causal = self.causal and context is None
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if ragged:
            heads = cache.attend(q, k, v)
        elif return_weights:
            q = q.to(k.dtype)
            weights = attention_weights(q, k, causal, mask)
            heads = F.dropout(weights, dropout_p) @ repeat_kv(v, self.n_head)
        else:
            heads = attention(q.to(k.dtype), k, v, causal, mask, dropout_p, self.explicit)
        concat = heads.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim)
        return self.resid_dropout(self.out(concat.to(compute_dtype))), weights
