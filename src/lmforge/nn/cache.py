"""The key/value cache: what decoding keeps so each new token costs one position's work.

A causal layer's keys and values for past positions never change, so a decoder computes them
once. The interface the inference engine uses:

    cache = KVCache()
    logits = model(prompt_ids, cache=cache)        # prefill: fills every layer
    logits = model(next_ids[:, None], cache=cache)  # one-token decode, positions continue at
                                                    # cache.length (RoPE and learned tables)

Tensors are (batch, n_kv_head, time, head_dim): stored before grouped-query heads are
repeated, so GQA/MQA caches are n_head / n_kv_head times smaller. An encoder-decoder also keeps
each layer's cross-attention keys and values, computed from the encoder output on the first
call. Growth is by concatenation; an engine that wants preallocated buffers can replace
`LayerCache` with one that has the same `length`, `append` and `cross`.
"""

from __future__ import annotations

import torch


class LayerCache:
    attend = None  # or a method (q, k, v) -> heads: see the module docstring

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.cross: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(-2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values; return all of them, oldest first."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v


class KVCache:
    """One `LayerCache` per decoder block, created on first use."""

    def __init__(self):
        self.layers: list[LayerCache] = []

    def layer(self, i: int) -> LayerCache:
        while len(self.layers) <= i:
            self.layers.append(LayerCache())
        return self.layers[i]

    @property
    def length(self) -> int:
        """Positions already seen; the next token's position."""
        return self.layers[0].length if self.layers else 0
