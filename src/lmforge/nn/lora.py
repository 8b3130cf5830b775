"""LoRA: a frozen linear layer plus a trainable low-rank update (Hu et al., 2021).

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,    A: (r, in), B: (out, r)

W and b stay frozen; only A and B train. B starts at zero, so the adapted layer starts as the
base layer; A starts as PEFT initialises it (Kaiming-uniform with a = sqrt(5), nn.Linear's own
init), so a run here and one with Hugging Face's `peft` begin alike. Merging folds the update
into the weight, W + (alpha / r) B A, after which the layer is a plain linear layer again.

`LoRALinear` is an `nn.Linear` (the same `weight` and `bias` parameters, so the base model's
weights load and save under their usual names) with `lora_A`, `lora_B` beside them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same tensors, not copies
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        """The update of the weight, (alpha / r) B A, shaped like it."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        update = self.lora_dropout(x) @ self.lora_A.t().to(x.dtype)
        return out + (update @ self.lora_B.t().to(x.dtype)) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding W + (alpha / r) B A (and the same bias)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.delta().to(self.weight.dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"
