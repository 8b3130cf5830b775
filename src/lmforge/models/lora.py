"""LoRA on the one Transformer: which layers get adapters, freezing the rest, merging, and the
adapter files Hugging Face's `peft` reads and writes.

Targets are the last names of linear layers, as PEFT's `target_modules` are: attention's `q`,
`k`, `v`, `out` (self- and cross-attention alike) and the MLP's `gate`, `up`, `down`. The
default is `all`, every one of them the model has, at rank 16: the LoRA paper's `q` and `v`
at rank 8 came 3.6 F1 points further from full fine-tuning on MiniLM's QA demo, and at full
fine-tuning's rate left its genre classifier at the majority class (docs/tasks.md).

A PEFT adapter directory holds `adapter_config.json` and `adapter_model.safetensors` with
tensors named for the Hugging Face model (`base_model.model.<module>.lora_A.weight`, ...). The
names come from the same two-way tables as `lmforge convert` (models/hf.py). Where one of
their modules holds several of ours (GPT-2's `c_attn` holds q, k and v), the adapters are
fused exactly: A stacks the parts' A, B is block-diagonal in the parts' B, and rank and alpha
are multiplied by the number of parts (`rank_pattern`, `alpha_pattern`), so the scaling
alpha / r is unchanged. Loading splits them back: each part gets the whole A and its rows of B.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, write_json
from lmforge.models.hf import FAMILIES, config_to_hf, detect_family, weight_map
from lmforge.models.mapping import WeightMap, _fill, _pattern
from lmforge.nn.lora import LoRALinear

TARGETS = ("q", "k", "v", "out", "gate", "up", "down")
ALL = "all"  # every one of TARGETS the model has
DEFAULT_TARGETS = (ALL,)
DEFAULT_RANK, DEFAULT_ALPHA = 16, 32.0  # alpha / r = 2, as the LoRA paper's 8 and 16
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
TASK_TYPES = {
    "lm": "CAUSAL_LM",
    "sequence-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
    "none": "FEATURE_EXTRACTION",
}


def _linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The body's linear layers by name (the head is never a LoRA target)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not name.startswith("head.")
    }


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def parse_targets(targets: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Target names, checked; ("all",) stands for every target the model has."""
    if targets is None or targets == "":
        return DEFAULT_TARGETS
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(t.strip() for t in names if t.strip())
    if names == (ALL,):
        return names
    unknown = sorted(set(names) - set(TARGETS))
    if unknown or not names:
        raise LmforgeError(
            f"unknown LoRA target(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(TARGETS)}, or {ALL} (default {','.join(DEFAULT_TARGETS)})"
        )
    return names


def apply_lora(
    model: nn.Module,
    targets=None,
    rank: int = DEFAULT_RANK,
    alpha: float = DEFAULT_ALPHA,
    dropout: float = 0.0,
    train_head: bool = False,
) -> list[str]:
    """Put adapters on the target layers of `model` in place and freeze everything else (the
    head stays trainable with `train_head`: a new task head has to learn). Returns the
    adapted layers' names."""
    names = parse_targets(targets)
    present = sorted({n.rsplit(".", 1)[-1] for n in _linear_layers(model)})
    if names == (ALL,):
        names = tuple(t for t in TARGETS if t in present)
    layers = {n: m for n, m in _linear_layers(model).items() if n.rsplit(".", 1)[-1] in names}
    absent = [t for t in names if t not in present]
    if absent:
        raise LmforgeError(
            f"no layer of this model is named {', '.join(absent)}; its targets are "
            f"{', '.join(t for t in TARGETS if t in present)}"
        )
    if rank < 1:
        raise LmforgeError(f"LoRA rank must be at least 1, not {rank}")
    for name, layer in layers.items():
        if rank > min(layer.in_features, layer.out_features):
            raise LmforgeError(
                f"LoRA rank {rank} is larger than layer {name} ({layer.out_features} x "
                f"{layer.in_features}); choose a rank of at most "
                f"{min(layer.in_features, layer.out_features)}"
            )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in layers.items():
        _replace(model, name, LoRALinear(layer, rank, alpha, dropout))
    if train_head and hasattr(model, "head"):
        tied = {id(e.weight) for e in model.modules() if isinstance(e, nn.Embedding)}
        for p in model.head.parameters():
            if id(p) not in tied:  # a head tied to the embedding stays frozen with it
                p.requires_grad_(True)
    return sorted(layers)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight, in place: plain linear layers again, trainable."""
    for name, layer in lora_layers(model).items():
        _replace(model, name, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- PEFT's adapter layout


def body_family(config):
    """The Hugging Face family whose body this model's is: the adapters live in the body, so
    a head the family has no class for (a GPT-2 classifier, say, or a mean-pooled BERT
    classifier: their BERT classifier reads the pooler) does not matter."""
    try:
        return detect_family(config)
    except LmforgeError as e:
        reason = e
    for family in FAMILIES.values():
        for pooler in (False, True):
            update = {"head": "none", "pooler": pooler, "pooling": "auto"}
            try:
                config_to_hf(family, config.model_copy(update=update))
                return family
            except LmforgeError:
                continue
    raise reason


def _concrete(model: nn.Module, family=None) -> dict[str, tuple[str, int, int]]:
    """Our concrete linear layers (decoder.blocks.3.attn.q) -> (their concrete module, which
    part of it, how many parts), from the family's weight table."""
    family = family or body_family(model.config)
    table = []
    for rule in weight_map(family, model.config).rules:
        if rule.theirs.endswith(".weight") and all(o.endswith(".weight") for o in rule.ours):
            for part, ours in enumerate(rule.ours):
                table.append((_pattern(ours.removesuffix(".weight")), rule, part))
    out = {}
    for name, _ in model.named_modules():
        for pattern, rule, part in table:
            m = pattern.fullmatch(name)
            if m:
                theirs = _fill(
                    rule.theirs.removesuffix(".weight"), m.group(1) if m.groups() else None
                )
                out[name] = (theirs, part, len(rule.ours))
                break
    return out


def _suffixes(adapted: set[str], every: set[str]) -> list[str]:
    """The shortest dotted suffixes that name the adapted modules and no other one (PEFT
    matches `target_modules` by suffix: GPT-2's `c_proj` alone would also take mlp.c_proj)."""
    others = every - adapted
    out = set()
    for name in adapted:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if not any(o == suffix or o.endswith("." + suffix) for o in others):
                out.add(suffix)
                break
    return sorted(out)


def trained_head(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task head's trainable parameters (a new head trains whole beside the adapters; a
    head tied to the embedding stays frozen), by our names."""
    head = getattr(model, "head", None)
    if head is None:
        return {}
    return {f"head.{n}": p for n, p in head.named_parameters() if p.requires_grad}


def _head_table(config) -> tuple[WeightMap | None, str]:
    """The rules naming this model's head in its Hugging Face class, or None and why not. A
    pooler only a classifier reading it uses (BERT's QA class has none) does not matter."""
    candidates = [config]
    reads_pooler = config.head == "sequence-classification" and config.sequence_pooling == "pooler"
    if config.pooler and not reads_pooler:
        candidates.append(config.model_copy(update={"pooler": False}))
    for candidate in candidates:
        try:
            family = detect_family(candidate)
        except LmforgeError:
            continue
        return WeightMap(family.heads.get(config.head, ())), ""
    return None, (
        f"transformers has no class for this model with its {config.head} head"
        + (f" (pooling {config.pooling})" if config.head == "sequence-classification" else "")
    )


def peft_head(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """The trained head as PEFT saves `modules_to_save`: (their tensor names -> tensors,
    their module names, ""). Where there is none to save, or transformers has no class for
    the model with this head (a mean-pooled or GPT-2 classifier), ({}, [], the reason)."""
    ours = {k: p.detach() for k, p in trained_head(model).items()}
    if not ours:
        return {}, [], "the model has no trained task head"
    table, why = _head_table(model.config)
    if table is None:
        return {}, [], why
    theirs, used = table.to_theirs(ours)
    if used != set(ours):
        return {}, [], f"no Hugging Face name for {', '.join(sorted(set(ours) - used))}"
    return theirs, sorted({name.rsplit(".", 1)[0] for name in theirs}), ""


def save_peft_adapter(model: nn.Module, directory: str | Path, base: str | None = None) -> Path:
    """Write the model's adapters as a PEFT adapter directory for its Hugging Face family,
    with a trained task head as PEFT's `modules_to_save` where transformers has a class for
    the whole model (`peft_head`)."""
    layers = lora_layers(model)
    if not layers:
        raise LmforgeError("the model has no LoRA adapters to save")
    family = body_family(model.config)
    where = _concrete(model, family)
    missing = sorted(n for n in layers if n not in where)
    if missing:
        raise LmforgeError(f"no Hugging Face name for LoRA layer(s) {', '.join(missing)}")
    groups: dict[str, dict[int, tuple[LoRALinear, int]]] = {}
    for name, layer in layers.items():
        theirs, part, parts = where[name]
        groups.setdefault(theirs, {})[part] = (layer, parts)
    ranks = {layer.rank for layer in layers.values()}
    alphas = {layer.alpha for layer in layers.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise LmforgeError("PEFT's layout here needs one rank and alpha for all adapters")
    rank, alpha = ranks.pop(), alphas.pop()
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    for theirs, parts in groups.items():
        held = sorted(parts)
        first, total = parts[held[0]]
        rows = first.out_features  # each part's share of their module's outputs
        a = torch.cat([parts[p][0].lora_A.detach() for p in held], 0)
        b = torch.zeros(rows * total, rank * len(held))  # block-diagonal in the parts' B
        for j, p in enumerate(held):
            b[p * rows : (p + 1) * rows, j * rank : (j + 1) * rank] = parts[p][0].lora_B
        key = f"base_model.model.{theirs}"
        tensors[f"{key}.lora_A.weight"] = a.contiguous().float()
        tensors[f"{key}.lora_B.weight"] = b.contiguous().float()
        if len(held) > 1:
            rank_pattern[theirs] = rank * len(held)
            alpha_pattern[theirs] = alpha * len(held)
    head, modules_to_save, _ = peft_head(model)
    for name, tensor in head.items():  # PEFT's file names a saved module as the model does
        tensors[f"base_model.model.{name}"] = tensor.contiguous().float()
    dropout = next(iter(layers.values())).lora_dropout
    config = {
        "peft_type": "LORA",
        "task_type": TASK_TYPES.get(model.config.head),
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout.p if isinstance(dropout, nn.Dropout) else 0.0,
        "target_modules": _suffixes(set(groups), {t for t, _, _ in where.values()}),
        "fan_in_fan_out": family.model_type == "gpt2",  # Conv1D layers
        "bias": "none",
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": modules_to_save or None,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, tmp, {"format": "pt"})
    write_json(directory / ADAPTER_CONFIG, config)
    return directory


def _pattern_value(patterns: dict, module: str, default):
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


# PEFT's file holds a saved module's tensors under the module's own name; older releases and
# in-memory state dicts put `modules_to_save[.ADAPTER]` before the tensor's last name
_SAVED_MODULE = re.compile(r"^base_model\.model\.(.+?)(?:\.modules_to_save(?:\.[^.]+)?)?\.([^.]+)$")


def _saved_modules(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter file's modules_to_save tensors by their name in the model."""
    out = {}
    for key, tensor in tensors.items():
        m = _SAVED_MODULE.match(key)
        if m and ".lora_" not in key:
            out[f"{m.group(1)}.{m.group(2)}"] = tensor
    return out


def adapter_head(directory: str | Path) -> tuple[str, int] | None:
    """(our head, its number of outputs) when a PEFT adapter directory holds a trained task
    head (modules_to_save), else None: what to put on a base before `load_peft_adapter`."""
    directory = Path(directory)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text("utf-8"))
        tensors = load_file(directory / ADAPTER_WEIGHTS)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # load_peft_adapter says what is wrong
    head = {v: k for k, v in TASK_TYPES.items()}.get(config.get("task_type"))
    saved = _saved_modules(tensors)
    if head in (None, "lm", "none") or not config.get("modules_to_save") or not saved:
        return None
    rows = [t.shape[0] for n, t in sorted(saved.items()) if n.endswith(".weight") and t.ndim == 2]
    return (head, rows[0]) if rows else None


def _saved_head(model: nn.Module, directory: Path, config: dict, tensors: dict) -> dict:
    """The adapter's modules_to_save tensors by our names, checked against `model`'s head."""
    saved = _saved_modules(tensors)
    if not saved or not config.get("modules_to_save"):
        return {}
    modules = sorted({n.rsplit(".", 1)[0] for n in saved})
    table, why = _head_table(model.config)
    if table is None:
        raise LmforgeError(f"{directory} holds a trained {', '.join(modules)}, but {why}")
    shapes = {name: p.shape for name, p in model.named_parameters() if name.startswith("head.")}
    found = table.to_ours(saved, shapes)
    if found.unexpected or found.misshaped:
        problem = ", ".join(found.unexpected + found.misshaped)
        raise LmforgeError(
            f"{directory} holds a trained head this model's {model.config.head} head cannot "
            f"take ({problem}); it was made for another task or number of labels"
        )
    return found.ours


def load_peft_adapter(model: nn.Module, directory: str | Path, dropout: float = 0.0) -> list[str]:
    """Put a PEFT LoRA adapter directory's adapters on `model` (in place; frozen like a
    fresh `apply_lora`), and the trained task head it saved (PEFT's modules_to_save) into
    the model's head, which stays trainable; returns the adapted layers' names."""
    directory = Path(directory)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text("utf-8"))
        tensors = load_file(directory / ADAPTER_WEIGHTS)
    except FileNotFoundError as e:
        raise LmforgeError(
            f"{directory} is not a PEFT adapter directory ({Path(e.filename).name} missing)"
        ) from None
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise LmforgeError(f"{directory}: unreadable adapter ({type(e).__name__})") from None
    if config.get("peft_type") != "LORA":
        raise LmforgeError(f"{directory} holds a {config.get('peft_type')} adapter, not LoRA")
    if config.get("use_dora") or config.get("use_rslora"):
        raise LmforgeError(f"{directory}: DoRA and rsLoRA adapters are not supported")
    ours_of: dict[str, list[tuple[str, int, int]]] = {}
    for name, (theirs, part, parts) in _concrete(model).items():
        ours_of.setdefault(theirs, []).append((name, part, parts))
    layers = _linear_layers(model)
    found = {}
    for key in tensors:
        m = re.match(r"base_model\.model\.(.+)\.lora_A(?:\.default)?\.weight$", key)
        if m:
            found[m.group(1)] = key
    if not found:
        raise LmforgeError(f"{directory}/{ADAPTER_WEIGHTS} holds no lora_A tensors")
    unknown = sorted(t for t in found if t not in ours_of)
    if unknown:
        raise LmforgeError(
            f"{directory} adapts modules this model does not have ({', '.join(unknown[:3])}); "
            "it was made for a different base model"
        )
    head = _saved_head(model, directory, config, tensors)  # checked before any change
    for p in model.parameters():
        p.requires_grad_(False)
    if head:  # the trained head PEFT saved (modules_to_save): trainable, as apply_lora's
        with torch.no_grad():
            for name, tensor in head.items():
                target = model.get_parameter(name)
                target.copy_(tensor.to(target.dtype))
                target.requires_grad_(True)
    adapted = []
    for theirs, key_a in sorted(found.items()):
        a = tensors[key_a]
        b = tensors[key_a.replace("lora_A", "lora_B")]
        rank = a.shape[0]
        alpha = _pattern_value(config.get("alpha_pattern"), theirs, config["lora_alpha"])
        for name, part, parts in ours_of[theirs]:
            base = layers[name]
            rows = b.shape[0] // parts
            if a.shape[1] != base.in_features or rows != base.out_features:
                raise LmforgeError(
                    f"{directory}: the adapter of {theirs} is for a {b.shape[0]} x "
                    f"{a.shape[1]} layer, but {name} is {base.out_features} x "
                    f"{base.in_features}; it was made for a different base model"
                )
            layer = LoRALinear(base, rank, alpha, dropout)
            with torch.no_grad():
                layer.lora_A.copy_(a)
                layer.lora_B.copy_(b[part * rows : (part + 1) * rows])
            _replace(model, name, layer)
            adapted.append(name)
    return adapted
