"""Load a model directory for inference: the model and the tokenizer it was trained with."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.models import GPT, from_pretrained
from lmforge.tokenizers import Tokenizer


def load_model_and_tokenizer(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer]:
    tokenizer = Tokenizer.load(directory)
    model = from_pretrained(directory, device)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise LmforgeError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"{model.config.vocab_size}; they belong to different runs"
        )
    return model, tokenizer
