"""Tiny model directories for the export tests: a GPT-2 with byte-level BPE, a Llama (RoPE,
RMSNorm, SwiGLU, grouped-query attention, untied head) with a Unigram tokenizer, and BERT
encoders (a classifier, an embedding model). Matrices are scaled up so greedy choices are
sharp: a logit gap between the first and second token is rarely within rounding."""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.models import Transformer, save_model_dir
from lmforge.tokenizers import Tokenizer

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. "
    "resolved.\n\nSecond Citizen:\nWould you proceed especially against Caius Marcius?\n\n"
) * 20
HELD_OUT = (
    "MENENIUS:\nWhat work's, my countrymen, in hand? where go you\nWith bats and clubs? "
    "The matter? speak, I pray you.\n\nFirst Citizen:\nOur business is not unknown to the "
    "senate; they have had inkling this fortnight what we intend to do.\n"
)

GPT2 = dict(block_size=64, n_layer=2, n_head=4, n_embd=64)
LLAMA = dict(
    block_size=64,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=64,
    positions="rope",
    rope_base=500.0,
    norm="rmsnorm",
    norm_eps=1e-6,
    mlp="gated",
    activation="silu",
    mlp_hidden=96,
    bias=False,
    tie_embeddings=False,
)
BERT = dict(
    arch="encoder",
    block_size=64,
    n_layer=2,
    n_head=4,
    n_embd=64,
    type_vocab_size=2,
    norm_position="post",
    embedding_norm=True,
    activation="gelu",
    norm_eps=1e-12,
)


def sharpen(model: Transformer, factor: float) -> Transformer:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return model


def model_dir(folder, tokenizer: Tokenizer, sharp: float = 4.0, seed: int = 0, **fields):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, **fields))
    sharpen(model, sharp)
    save_model_dir(model, folder)
    tokenizer.save(folder)
    return folder


def bpe_tokenizer(pattern: str = "gpt2") -> Tokenizer:
    return Tokenizer.train([TEXT], "bpe", vocab_size=320, pattern=pattern)


def gpt2_dir(folder, **extra):
    return model_dir(folder, bpe_tokenizer(), **{**GPT2, **extra})


def llama_dir(folder, **extra):
    tok = Tokenizer.train([TEXT + HELD_OUT], "unigram", vocab_size=200)
    return model_dir(folder, tok, **{**LLAMA, **extra})


def bert_dir(folder, **extra):
    tok = Tokenizer.train([TEXT], "wordpiece", vocab_size=200)
    return model_dir(folder, tok, sharp=1.0, **{**BERT, **extra})
