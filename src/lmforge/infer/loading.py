"""Load a model directory for inference: the model and the tokenizer it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.models import Transformer, from_pretrained
from lmforge.tokenizers import TOKENIZER_FILE, Tokenizer, WordPieceTokenizer


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """tokenizer.json, or else a BERT vocab.txt (lower-cased unless tokenizer_config.json
    says do_lower_case: false)."""
    directory = Path(directory)
    vocab = directory / "vocab.txt"
    if not (directory / TOKENIZER_FILE).is_file() and vocab.is_file():
        try:
            settings = json.loads((directory / "tokenizer_config.json").read_text("utf-8"))
        except (OSError, ValueError):
            settings = {}
        return WordPieceTokenizer.from_vocab_file(vocab, settings.get("do_lower_case", True))
    return Tokenizer.load(directory)


def load_model_and_tokenizer(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, Tokenizer]:
    tokenizer = load_tokenizer(directory)
    model = from_pretrained(directory, device)
    # Hugging Face models often pad the embedding table past the tokenizer; never below it.
    if model.config.vocab_size < tokenizer.vocab_size:
        raise LmforgeError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"{model.config.vocab_size}; they belong to different models"
        )
    return model, tokenizer
