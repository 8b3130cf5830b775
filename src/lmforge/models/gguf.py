"""GGUF names: how our tensors, config fields and tokenizers become llama.cpp's, declared
beside the Hugging Face tables (models/hf.py) and read by `lmforge export gguf`
(lmforge/export/gguf.py, which owns the file format through the `gguf` package).

llama.cpp runs a model by its `general.architecture`; two of its graphs hold the decoders we
build:

    gpt2   learned positions, pre-LayerNorm with biases, fused W^Q|W^K|W^V, tanh GELU MLP
    llama  RoPE, pre-RMSNorm, separate W^Q W^K W^V (GQA allowed), SwiGLU MLP

A model is checked against the Hugging Face family of the same name first (config_to_hf:
every field must read back unchanged, or the error names the field), then against what
llama.cpp's graph adds (`GGUFArch.needs`: its GPT-2 graph has only the tanh GELU, its llama
graph only SiLU).

Tensor rules use models/mapping.py: `Rule(theirs, ours, transform)`, `{i}` a block index.
GGUF stores a matrix with its dimensions reversed (ne[0] is the fastest), which is exactly
nn.Linear's (out, in) row-major layout, so no transposes are needed. Two transforms are:

  - gpt2's `attn_qkv` is W^Q, W^K, W^V stacked along the output dimension (SPLIT3);
  - llama's `attn_q` / `attn_k` rows are permuted per head: our RoPE pairs dimension i with
    i + d/2 (Hugging Face's half-split layout, nn/positions.py), llama.cpp's llama graph
    pairs 2i with 2i+1. Row j of the first half goes to row 2j, row j of the second half to
    2j + 1 (`rope_interleave`). Their biases, if any, move the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.models.hf import GPT2, LLAMA, Family
from lmforge.models.mapping import SPLIT3, Rule, Transform, WeightMap, linear
from lmforge.tokenizers.bpe import PATTERNS

# ---------------------------------------------------------------- tensors


def rope_interleave(heads: int) -> Transform:
    """Our half-split rotary layout <-> llama.cpp's interleaved pairs, per head."""

    def to_theirs(ts: list[torch.Tensor]) -> torch.Tensor:
        t = ts[0]
        return t.reshape(heads, 2, -1, *t.shape[1:]).transpose(1, 2).reshape(t.shape)

    def to_ours(t: torch.Tensor) -> list[torch.Tensor]:
        return [t.reshape(heads, -1, 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)]

    return Transform(f"rope pairs interleaved ({heads} heads)", to_ours, to_theirs)


_B = "decoder.blocks.{i}"


def gpt2_rules(c: ModelConfig) -> list[Rule]:
    return [
        Rule("token_embd.weight", "tok_embed.weight"),
        Rule("position_embd.weight", "decoder.pos_embed.weight"),
        *linear("blk.{i}.attn_norm", f"{_B}.attn_norm"),
        *linear("blk.{i}.attn_qkv", tuple(f"{_B}.attn.{x}" for x in "qkv"), SPLIT3, SPLIT3),
        *linear("blk.{i}.attn_output", f"{_B}.attn.out"),
        *linear("blk.{i}.ffn_norm", f"{_B}.mlp_norm"),
        *linear("blk.{i}.ffn_up", f"{_B}.mlp.up"),
        *linear("blk.{i}.ffn_down", f"{_B}.mlp.down"),
        *linear("output_norm", "decoder.final_norm"),
        Rule("output.weight", "head.out.weight"),  # absent when tied: llama.cpp reuses token_embd
    ]


def llama_rules(c: ModelConfig) -> list[Rule]:
    q, k = rope_interleave(c.n_head), rope_interleave(c.kv_heads)
    return [
        Rule("token_embd.weight", "tok_embed.weight"),
        Rule("blk.{i}.attn_norm.weight", f"{_B}.attn_norm.weight"),
        *linear("blk.{i}.attn_q", f"{_B}.attn.q", q, q),
        *linear("blk.{i}.attn_k", f"{_B}.attn.k", k, k),
        *linear("blk.{i}.attn_v", f"{_B}.attn.v"),
        *linear("blk.{i}.attn_output", f"{_B}.attn.out"),
        Rule("blk.{i}.ffn_norm.weight", f"{_B}.mlp_norm.weight"),
        *linear("blk.{i}.ffn_gate", f"{_B}.mlp.gate"),
        *linear("blk.{i}.ffn_up", f"{_B}.mlp.up"),
        *linear("blk.{i}.ffn_down", f"{_B}.mlp.down"),
        Rule("output_norm.weight", "decoder.final_norm.weight"),
        Rule("output.weight", "head.out.weight"),
    ]


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Meta:
    key: str  # after "<arch>."
    kind: str  # "u32" or "f32"
    value: str  # a ModelConfig field or property


@dataclass(frozen=True)
class GGUFArch:
    name: str  # general.architecture
    family: Family  # the Hugging Face family that must hold the model exactly
    needs: dict[str, tuple[Any, str]]  # field -> (value, why llama.cpp needs it)
    rules: Any  # ModelConfig -> list[Rule]
    meta: tuple[Meta, ...]

    def weight_map(self, c: ModelConfig) -> WeightMap:
        return WeightMap(self.rules(c))


_SHAPE = (
    Meta("context_length", "u32", "block_size"),
    Meta("embedding_length", "u32", "n_embd"),
    Meta("feed_forward_length", "u32", "mlp_width"),
    Meta("block_count", "u32", "n_layer"),
    Meta("attention.head_count", "u32", "n_head"),
    Meta("attention.head_count_kv", "u32", "kv_heads"),
    Meta("attention.key_length", "u32", "head_width"),
    Meta("attention.value_length", "u32", "head_width"),
    Meta("vocab_size", "u32", "vocab_size"),
)

ARCHS = {
    a.name: a
    for a in (
        GGUFArch(
            "gpt2",
            GPT2,
            {
                "activation": (
                    "gelu_tanh",
                    "llama.cpp's gpt2 graph computes the tanh approximation of GELU",
                ),
                "head": ("lm", "llama.cpp needs the LM head to produce next-token logits"),
            },
            gpt2_rules,
            (*_SHAPE, Meta("attention.layer_norm_epsilon", "f32", "norm_eps")),
        ),
        GGUFArch(
            "llama",
            LLAMA,
            {
                "activation": ("silu", "llama.cpp's llama graph computes SwiGLU (SiLU gate)"),
                "head": ("lm", "llama.cpp needs the LM head to produce next-token logits"),
            },
            llama_rules,
            (
                *_SHAPE,
                Meta("attention.layer_norm_rms_epsilon", "f32", "norm_eps"),
                Meta("rope.freq_base", "f32", "rope_base"),
                Meta("rope.dimension_count", "u32", "head_width"),
            ),
        ),
    )
}

# ---------------------------------------------------------------- tokenizers

# Byte-level BPE (tokenizer.ggml.model "gpt2"): our pre-tokenizer regex -> llama.cpp's name
# for the same regex (tokenizer.ggml.pre). "llama-bpe" is the Llama 3 / cl100k pattern.
BPE_PRE = {PATTERNS["gpt2"]: "gpt-2", PATTERNS["cl100k"]: "llama-bpe"}

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.model for each of our algorithms; Unigram becomes a Llama-style
# SentencePiece vocabulary: pieces with their log-probabilities as scores, '▁' for spaces.
TOKENIZER_MODELS = {"bpe": "gpt2", "unigram": "llama"}

# general.file_type (llama.cpp's llama_ftype) for each --dtype
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}
