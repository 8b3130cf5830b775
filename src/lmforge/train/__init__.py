"""Training: objectives, optimizers and schedules, the loop, checkpoints, metrics, pretraining."""

from lmforge.train.losses import causal_lm_loss, mask_tokens, seq2seq_loss, span_loss, token_loss
from lmforge.train.optim import build_optimizer, lr_at, param_groups
from lmforge.train.trainer import (
    Objective,
    Trainer,
    TrainingInterrupted,
    TrainState,
    evaluate,
    train_step,
)

__all__ = [
    "Objective",
    "TrainState",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "causal_lm_loss",
    "evaluate",
    "lr_at",
    "mask_tokens",
    "param_groups",
    "seq2seq_loss",
    "span_loss",
    "token_loss",
    "train_step",
]
