"""AdamW with decoupled weight decay on matrices only, and the warmup + cosine LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices of Linear layers; leave norms, biases and embeddings alone
    (decaying them pulls gains toward 0 and rare-token embeddings toward nothing)."""
    decay, seen = [], set()
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            # A Linear tied to an embedding (the output head) stays an embedding.
            if not any(
                module.weight is e.weight for e in model.modules() if isinstance(e, nn.Embedding)
            ):
                decay.append(module.weight)
            seen.add(id(module.weight))
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in decay_ids]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type in {"cuda", "cpu"}  # fused AdamW kernels exist for both
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak over `warmup_steps`, then cosine decay to min_lr_ratio * peak
    at the last step."""
    peak = cfg.learning_rate
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = peak * cfg.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
