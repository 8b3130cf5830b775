"""Training: objective, optimizer and schedule, the loop, checkpoints, metrics, the pretrain job."""

from lmforge.train.optim import build_optimizer, lr_at, param_groups
from lmforge.train.trainer import TrainingInterrupted, evaluate, lm_loss, train

__all__ = [
    "TrainingInterrupted",
    "build_optimizer",
    "evaluate",
    "lm_loss",
    "lr_at",
    "param_groups",
    "train",
]
