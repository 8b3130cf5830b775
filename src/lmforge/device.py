"""Device and precision policy shared by training and inference."""

from __future__ import annotations

import contextlib
import functools
import time
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
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (avx2, avx512_bf16, amx_bf16, ...); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fast_bf16(flags: frozenset[str] | set[str]) -> bool:
    """bf16 matmuls beat fp32 on CPUs with AMX (amx_bf16) or AVX-512 BF16 (avx512_bf16);
    with AVX-512 or AVX2 alone they are emulated and many times slower than fp32."""
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def cpu_has_fast_bf16() -> bool:
    """`fast_bf16` of this machine's CPU."""
    return fast_bf16(cpu_flags())


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


@functools.cache
def matmul_peak(device: torch.device, precision: str = "fp32") -> float:
    """FLOP/s of a square matmul in `precision` on `device`, the best of a few tenths of a
    second: the denominator of model FLOPs utilisation (MFU)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 4096 if device.type == "cuda" else 512  # big enough to keep the device busy
    # a generator of its own: drawing from the global one would shift training's dropout
    generator = torch.Generator(device).manual_seed(0)
    a, b = torch.randn(2, n, n, generator=generator, device=device).to(dtype)
    syncs = {"cuda": torch.cuda.synchronize, "mps": lambda: torch.mps.synchronize()}
    sync = syncs.get(device.type, lambda: None)  # GPU kernels return before they finish
    a @ b
    sync()
    best, started = float("inf"), time.perf_counter()
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - started > 0.2:
            break
    return 2 * n**3 / best
