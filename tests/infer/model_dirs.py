"""A tiny character-level model directory (weights, config, tokenizer) for command tests."""

import torch

from lmforge.config import ModelConfig
from lmforge.models import Transformer, save_model_dir
from lmforge.tokenizers import Tokenizer


def char_model_dir(folder, texts: list[str], block_size: int = 32):
    """A random 1-layer model over the characters of `texts`, saved in `folder`."""
    tok = Tokenizer.train(texts, "char")
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=32
        )
    )
    save_model_dir(model, folder)
    tok.save(folder)
    return folder
