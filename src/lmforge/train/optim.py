"""Optimizers from torch.optim by name, weight decay on matrices only, and LR schedules.

Schedules (`lr_at`), all with a linear warmup over `warmup_steps` to the peak
`learning_rate`, then:
- cosine: half a cosine down to `min_lr_ratio` x peak at the last step (GPT-3, Chinchilla);
- linear: a straight line down to the same floor (BERT);
- constant: the peak until the end;
- noam: peak x sqrt(warmup / step), the inverse square root of "Attention Is All You Need".
  The paper's d_model^-0.5 x min(step^-0.5, step x warmup^-1.5) is this with
  peak = (d_model x warmup)^-0.5, e.g. 7.0e-4 for d_model 512 and 4000 warmup steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, head_lr_scale: float = 1.0) -> list[dict]:
    """Decay the weight matrices of Linear layers; leave norms, biases and embeddings alone
    (decaying them pulls gains toward 0 and rare-token embeddings toward nothing). With a
    `head_lr_scale` other than 1, the task head's parameters form groups of their own whose
    learning rate is that multiple of the schedule's (`lr_scale`, which train_step reads)."""
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
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if head_lr_scale == 1.0:
        return groups
    # "head" as a name component: the Transformer's head, under any DDP/FSDP wrapper prefix
    head = {id(p) for n, p in model.named_parameters() if "head" in n.split(".")}
    return [
        {**g, "params": [p for p in g["params"] if (id(p) in head) == in_head], "lr_scale": s}
        for in_head, s in ((False, 1.0), (True, head_lr_scale))
        for g in groups
    ]


OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    kind = OPTIMIZERS[cfg.optimizer]
    options: dict = {"lr": cfg.learning_rate}
    if cfg.optimizer in {"adamw", "adam"}:
        options["betas"] = (cfg.beta1, cfg.beta2)
    elif cfg.optimizer in {"sgd", "rmsprop"}:
        options["momentum"] = cfg.momentum
    groups = param_groups(model, cfg.weight_decay, cfg.head_lr_scale)
    if _mixes_meshes(model):  # tensor parallel: one fused or foreach kernel cannot take all
        return kind(groups, foreach=False, **options)
    try:  # one fused kernel for all parameters, where torch has it for this device
        return kind(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return kind(groups, foreach=device.type != "mps", **options)


def _mixes_meshes(model: nn.Module) -> bool:
    """Parameters of more than one kind: plain tensors and DTensors, or DTensors on different
    meshes (FSDP over TP shards the TP matrices on both mesh dimensions, the rest on one)."""
    from torch.distributed.tensor import DTensor

    kinds = {p.device_mesh if isinstance(p, DTensor) else None for p in model.parameters()}
    return len(kinds) > 1


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of (0-based) `step`; see the module docstring."""
    peak = cfg.learning_rate
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "noam":
        return peak * math.sqrt(max(cfg.warmup_steps, 1) / (step + 1))
    span = max(1, cfg.max_steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = peak * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
