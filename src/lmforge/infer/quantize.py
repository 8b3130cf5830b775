"""Weight-only int8 quantization for CPU decoding.

Decoding one token reads every weight once and does little arithmetic with it, so its speed
is set by memory bandwidth: fp32 weights cost 4 bytes per parameter per token, int8 weights
1. Each output row of a Linear layer is stored as int8 values q and one fp32 scale s,
chosen so the row's largest magnitude maps to 127:  W[i, :] ~ s[i] * q[i, :]. Activations
stay in floating point; PyTorch's `_weight_int8pack_mm` kernel multiplies by q and applies
s on the fly, so the weights are never expanded back in memory.

The rounding error is at most s/2 per weight; docs/inference.md reports what it costs in
held-out perplexity. Embedding tables stay as they are (a lookup reads one row); an output
head tied to the embedding gets its own int8 copy.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_ALIGNMENT = 32  # input widths the int8 kernel handles correctly in fp32 and bf16


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.in_features % KERNEL_ALIGNMENT == 0:
            out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale.to(x.dtype))
        else:  # the kernel gives wrong bf16 results (or crashes) on other widths
            out = flat @ (self.qweight.to(x.dtype) * self.scale.to(x.dtype)[:, None]).T
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by an Int8Linear; returns the model."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear(child))
    return model
