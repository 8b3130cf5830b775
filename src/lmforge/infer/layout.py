"""Weights in the layout a batched decode step multiplies fastest on a CPU.

`nn.Linear` keeps its weight as (out, in) and computes x W^T. For the few rows of a decode
step (one token per running sequence), MKL's fp32 GEMM then repacks the whole weight on every
call: 8 rows cost about 3x one row on an AVX-512 Xeon and 2.7x under AVX2, where reading the
weight once should make them cost about the same. Stored transposed, (in, out), the same
product x W is 1.1-1.3x one row's cost at 8 rows (AVX2: 2x), and no slower from 4 rows up
to a 256-token prompt piece (`benchmarks/serve.py` has the effect on a whole server). Only fp32
gains: bf16 products go to oneDNN, which is already flat in the row count.

A weight shared with another module (a head tied to the embedding) keeps its layout, since a
transposed copy would double it; its product is taken the other way round, (W x^T)^T, with
the weight as the left operand: 1.5x faster than x W^T at 8 rows for GPT-2's 50257 x 768 head,
and 2x slower at 2 rows, so below 4 rows it is x W^T. `benchmarks/decode_step.py` measures
both tables.
"""

from __future__ import annotations

import torch
from torch import nn


class TransposedLinear(nn.Module):
    """y = x W + b with W stored (in_features, out_features): the same function as the
    nn.Linear it replaces, with the weight in the other layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        w, b = self.weight_t, self.bias
        if w.dtype != x.dtype:  # an autocast region: compute in its dtype
            w, b = w.to(x.dtype), None if b is None else b.to(x.dtype)
        out = flat @ w if b is None else torch.addmm(b, flat, w)
        return out.view(*x.shape[:-1], self.out_features)


WEIGHT_FIRST_ROWS = 4  # from this many rows (W x^T)^T is the faster order (decode_step.py)


class WeightFirstLinear(nn.Module):
    """y = (W x^T)^T + b, with the weight of the nn.Linear it replaces, shared as it was."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        w = self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if flat.size(0) < WEIGHT_FIRST_ROWS:  # x W^T is as cheap at 1 row, 2x cheaper at 2
            out = torch.nn.functional.linear(flat, w, bias)
        else:
            out = (w @ flat.T).T
            if bias is not None:
                out = out + bias
        return out.reshape(*x.shape[:-1], self.out_features)


def transpose_linears(model: nn.Module) -> nn.Module:
    """Replace (in place) every fp32 nn.Linear of `model`: by a TransposedLinear, or where
    another module shares its weight by a WeightFirstLinear; returns the model."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32:
                shared = owners[id(child.weight)] > 1
                setattr(module, name, (WeightFirstLinear if shared else TransposedLinear)(child))
    return model
