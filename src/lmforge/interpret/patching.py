"""Activation patching (causal tracing, Meng et al. 2022; Wang et al. 2022): run a corrupted
input, copy one activation (one layer, one position) from the clean run into it, and see how
much of the clean behaviour comes back, measured by a logit difference.

    effect[layer, position] = metric(corrupted run, that activation patched from clean)

A large effect marks a place that carries the information the corruption destroyed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.interpret.hooks import POINTS, run_with_cache, run_with_hooks, stacks

Metric = Callable[[torch.Tensor], torch.Tensor]  # model output -> scalar


def logit_difference(good: int, bad: int, position: int = -1) -> Metric:
    """logit[good] - logit[bad] at `position` of row 0."""
    return lambda logits: logits[0, position, good] - logits[0, position, bad]


def patch(
    model: nn.Module,
    input_ids: torch.Tensor,
    source: dict[str, torch.Tensor],
    where: dict[str, list[int] | None],
    **kwargs,
) -> torch.Tensor:
    """The output on `input_ids` with, at each name of `where`, the positions listed (None:
    all) taken from `source` (a cache of another run of the same length)."""

    def replacer(positions):
        def fn(tensor: torch.Tensor, name: str) -> torch.Tensor:
            new = tensor.clone()
            if positions is None:
                new[:] = source[name]
            else:
                new[:, positions] = source[name][:, positions]
            return new

        return fn

    return run_with_hooks(model, {n: replacer(p) for n, p in where.items()}, input_ids, **kwargs)


@torch.no_grad()
def patching_sweep(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corrupt_ids: torch.Tensor,
    metric: Metric,
    point: str = "resid_pre",
    **kwargs,
) -> dict:
    """{"effects": (layers, t) metric after patching each (layer, position) of `point`,
    "restored": (layers, t) the share of the clean-corrupt gap each patch closes,
    (effect - corrupt) / (clean - corrupt), "clean": metric on the clean run, "corrupt": on
    the corrupted one}, over the last stack (a decoder's, or an encoder's); `kwargs` go to
    every run (attention_mask, token_type_ids)."""
    if clean_ids.shape != corrupt_ids.shape:
        raise LmforgeError(
            f"clean and corrupted inputs must have the same number of tokens, got "
            f"{clean_ids.size(-1)} and {corrupt_ids.size(-1)}"
        )
    if point not in POINTS or point.endswith("_pattern") or point.startswith("cross"):
        choices = [p for p in POINTS if not p.endswith("_pattern") and "cross" not in p]
        raise LmforgeError(f"cannot patch '{point}'; choose one of {', '.join(choices)}")
    stack = "decoder" if "decoder" in stacks(model) else "encoder"
    n = len(stacks(model)[stack].blocks)
    names = [f"{stack}.{i}.{point}" for i in range(n)]
    if "encoder" in stacks(model) and "decoder" in stacks(model):
        raise LmforgeError("activation patching supports decoder and encoder models")
    clean_out, clean_cache = run_with_cache(model, clean_ids, names=names, **kwargs)
    t = clean_ids.size(-1)
    effects = torch.empty(n, t)
    for i, name in enumerate(names):
        for p in range(t):
            effects[i, p] = metric(patch(model, corrupt_ids, clean_cache, {name: [p]}, **kwargs))
    clean, corrupt = float(metric(clean_out)), float(metric(model(corrupt_ids, **kwargs)))
    gap = clean - corrupt
    restored = (effects - corrupt) / gap if gap != 0 else torch.full_like(effects, float("nan"))
    return {"effects": effects, "restored": restored, "clean": clean, "corrupt": corrupt}
