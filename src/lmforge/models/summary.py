"""A readable summary of a model: its components, parameters by component, FLOPs per token."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from lmforge.config import (
    ModelConfig,
    load_config,
    load_model_preset,
    model_preset_names,
    preset_names,
)
from lmforge.errors import LmforgeError
from lmforge.models.transformer import Transformer

SUBLAYERS = {"attn": "self-attention", "cross": "cross-attention", "mlp": "MLP"}


def model_config_of(spec: str) -> ModelConfig:
    """The ModelConfig named by an architecture preset, a run preset, a YAML file, or a model
    directory (lmforge or Hugging Face; only config.json is read)."""
    path = Path(spec)
    if path.is_dir():
        from lmforge.models.hf import config_from_hf, family_of
        from lmforge.models.io import read_config_json, read_model_config

        hf = read_config_json(path)
        if "model_type" in hf:
            return config_from_hf(family_of(hf, spec), hf, spec)
        return read_model_config(path)
    if spec in model_preset_names() or path.suffix in {".yaml", ".yml"}:
        return load_model_preset(spec)
    if spec in preset_names():
        return load_config(spec).model
    raise LmforgeError(
        f"'{spec}' is not a model directory, YAML file or preset; presets: "
        f"{', '.join(model_preset_names() + preset_names())}"
    )


def component_of(name: str) -> str:
    """'decoder.blocks.3.attn.q.weight' -> 'decoder self-attention'."""
    parts = name.split(".")
    if parts[0] == "tok_embed":
        return "token embedding"
    if parts[0] in {"encoder", "decoder"}:
        stack, part = parts[0], parts[1]
        if part == "blocks":
            part = parts[3]
            return f"{stack} {SUBLAYERS.get(part, 'norms')}"
        names = {"pos_embed": "position embedding", "type_embed": "token-type embedding"}
        return f"{stack} {names.get(part, 'norms')}"
    return parts[0]  # pooler, head


def _flops(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.1f} M"


def summarize(model: Transformer, title: str = "model") -> str:
    c = model.config
    counts: Counter[str] = Counter()
    for name, p in model.named_parameters():  # a tied head is not listed again
        counts[component_of(name)] += p.numel()
    total = sum(counts.values())
    if c.arch == "encoder-decoder":
        layers = f"{c.n_layer} encoder + {c.decoder_layers} decoder layers"
    else:
        layers = f"{c.n_layer} layers"
    kv = "" if c.kv_heads == c.n_head else f", {c.kv_heads} key/value heads"
    position = c.positions + (f" (base {c.rope_base:g})" if c.positions == "rope" else "")
    lines = [
        f"{title}: {c.arch}, {layers}, width {c.n_embd}, "
        f"context {c.block_size}, vocabulary {c.vocab_size}",
        f"attention: {c.n_head} heads x {c.head_width}{kv} ({c.attention}); positions: "
        f"{position}; norm: {c.norm} ({c.norm_position}, eps {c.norm_eps:g})",
        f"mlp: {c.mlp} {c.activation}, hidden {c.mlp_width}; bias: {c.bias}; "
        f"embeddings tied: {c.tie_embeddings}; head: {c.head}",
        "",
        f"{'component':<32}{'parameters':>15}{'share':>8}",
    ]
    for name, n in counts.items():
        lines.append(f"{name:<32}{n:>15,}{n / total:>8.1%}")
    if c.tie_embeddings and c.head in {"lm", "mlm"}:
        lines.append(f"{'(output projection)':<32}{'tied to the token embedding':>31}")
    forward = model.flops_per_token(training=False)
    lines += [
        f"{'total':<32}{total:>15,}",
        f"{'without embedding tables':<32}{model.num_parameters(non_embedding=True):>15,}",
        f"FLOPs per token (context {c.block_size}): forward {_flops(forward)}, "
        f"training {_flops(3 * forward)}",
    ]
    return "\n".join(lines)


def summary_of(spec: str, vocab_size: int | None = None) -> str:
    """Summarize the model `spec` names without allocating its weights."""
    config = model_config_of(spec)
    if vocab_size:
        config = config.model_copy(update={"vocab_size": vocab_size})
    if config.vocab_size < 1:
        raise LmforgeError(
            f"{spec} leaves vocab_size to the tokenizer (0); pass --vocab-size to count it"
        )
    with torch.device("meta"):  # shapes only: a 7B model costs nothing
        model = Transformer(config)
    return summarize(model, spec)
