"""Inference precision: which copy of the weights reads the prompt, and which decodes.

fp32   all in fp32.
bf16   weights in bf16: half the bytes for each decode step to read. Prefill is as fast
       only where the hardware multiplies bf16 quickly (GPUs, CPUs with AMX or AVX-512
       BF16); on other CPUs bf16 matmuls are many times slower than fp32.
int8   weight-only int8 Linear layers (quantize.py): a quarter of the bytes, and a
       kernel that is only fast with AVX-512.
mixed  the prompt through fp32 weights (prefill multiplies every prompt token by each
       weight: bound by arithmetic), the decode steps through a bf16 copy (each step
       multiplies one token per sequence by each weight: bound by reading them). The
       best of both on CPUs without fast bf16, for 1.5x the weight memory.
auto   bf16 where bf16 is fast (GPUs with bf16, CPUs with AMX or AVX-512 BF16); on other
       CPUs mixed when one sequence decodes and fp32 for batches and beams, since a bf16
       matmul of several rows is slower than fp32's there (docs/inference.md); fp32 on
       anything else. Greedy text and log-probabilities from bf16 weights can differ
       slightly from fp32's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lmforge.device import resolve_precision
from lmforge.infer.layout import transpose_linears
from lmforge.infer.quantize import quantize_int8

PRECISIONS = ("auto", "fp32", "bf16", "int8", "mixed")


def resolve(precision: str, device: torch.device, rows: int = 1) -> str:
    """'auto' made concrete for `rows` sequences decoded together (batch x beams)."""
    if precision != "auto":
        return precision
    if resolve_precision("auto", device) == "bf16":  # training's rule: fast bf16 hardware
        return "bf16"
    return "mixed" if rows == 1 and device.type == "cpu" else "fp32"


def inference_models(
    model: nn.Module, precision: str, rows: int = 1
) -> tuple[nn.Module, nn.Module | None]:
    """(the model for prompts, the model for decode steps or None for the same) in a
    concrete precision; `model` (fp32) is converted in place unless mixed keeps it. On a
    CPU, fp32 weights that decode `rows` >= 4 sequences at once (a server's batch, a beam
    search) are stored in the layout that makes a few-row product cost about one row's
    (lmforge.infer.layout; at 2 rows it is 1.2x slower, from 4 on faster)."""
    if precision == "fp32":
        model = model.float()
        if rows >= 4 and next(model.parameters()).device.type == "cpu":
            transpose_linears(model)
        return model, None
    if precision == "bf16":
        return model.to(torch.bfloat16), None
    if precision == "int8":
        return quantize_int8(model), None
    if precision == "mixed":
        return model.float(), copy.deepcopy(model).to(torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
