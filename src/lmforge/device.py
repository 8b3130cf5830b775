"""Device and precision policy shared by training and inference."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from lmforge.errors import LmforgeError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LmforgeError("device 'cuda' was asked for but no CUDA GPU is visible; use cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LmforgeError("device 'mps' was asked for but is not available; use cpu")
    return torch.device(name)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls beat fp32 on CPUs with AMX or AVX-512 BF16; elsewhere they are far slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the hardware runs it fast, else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context: weights stay fp32, matmuls run in bf16."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
