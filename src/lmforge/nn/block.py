"""A Transformer block: self-attention, cross-attention (decoders of encoder-decoders), MLP.

Each sub-layer f is wrapped by a residual connection and a norm:
    pre-norm  (GPT-2, Llama):  x + f(norm(x))
    post-norm (2017 paper, BERT, BART):  norm(x + f(x))
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.attention import MultiHeadAttention
from lmforge.nn.cache import LayerCache
from lmforge.nn.mlp import MLP
from lmforge.nn.norm import make_norm


class Block(nn.Module):
    def __init__(self, c: ModelConfig, causal: bool, cross: bool = False):
        super().__init__()
        self.pre_norm = c.norm_position == "pre"
        explicit = c.attention == "explicit"

        def norm():
            return make_norm(c.norm, c.n_embd, c.norm_eps, c.bias)

        def attention(is_causal: bool):
            return MultiHeadAttention(
                c.n_embd, c.n_head, c.kv_heads, c.head_width, c.bias, c.dropout, is_causal, explicit
            )

        self.attn_norm = norm()
        self.attn = attention(causal)
        self.cross_norm = norm() if cross else None
        self.cross = attention(False) if cross else None
        self.mlp_norm = norm()
        self.mlp = MLP(c.n_embd, c.mlp_width, c.bias, c.dropout, c.activation, c.mlp == "gated")

    def _into(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return norm(x) if self.pre_norm else x

    def _add(self, x: torch.Tensor, out: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return x + out if self.pre_norm else norm(x + out)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> (x, self-attention weights, cross-attention weights); weights only on request."""
        out, self_weights = self.attn(
            self._into(x, self.attn_norm),
            mask=mask,
            rope=rope,
            cache=cache,
            return_weights=return_weights,
        )
        x = self._add(x, out, self.attn_norm)
        cross_weights = None
        if self.cross is not None:
            out, cross_weights = self.cross(
                self._into(x, self.cross_norm),
                context=context,
                mask=context_mask,
                cache=cache,
                return_weights=return_weights,
            )
            x = self._add(x, out, self.cross_norm)
        x = self._add(x, self.mlp(self._into(x, self.mlp_norm)), self.mlp_norm)
        return x, self_weights, cross_weights
