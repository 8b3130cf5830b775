"""Model directories, both kinds, and filling a model from tensors with clear errors.

lmforge's own: `config.json` holds the run's resolved config (`{"model": {...}, ...}`) and
`model.safetensors` the weights under our parameter names. Hugging Face's: `config.json` with
a `model_type`, weights in `model.safetensors` or in shards listed by
`model.safetensors.index.json` (see models/hf.py). `from_pretrained` reads either.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, write_json
from lmforge.models.mapping import SPLIT3, Rule, Translation, WeightMap, linear
from lmforge.models.transformer import Transformer

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"

# Directories written before the configurable core: a fused qkv projection, GPT-style names.
_OLD = "decoder.blocks.{i}"
LEGACY_LAYOUT = WeightMap(
    [
        Rule("wte.weight", "tok_embed.weight"),
        Rule("wpe.weight", "decoder.pos_embed.weight"),
        *linear("blocks.{i}.ln_1", f"{_OLD}.attn_norm"),
        *linear("blocks.{i}.attn.qkv", tuple(f"{_OLD}.attn.{x}" for x in "qkv"), SPLIT3, SPLIT3),
        *linear("blocks.{i}.attn.out", f"{_OLD}.attn.out"),
        *linear("blocks.{i}.ln_2", f"{_OLD}.mlp_norm"),
        *linear("blocks.{i}.mlp.up", f"{_OLD}.mlp.up"),
        *linear("blocks.{i}.mlp.down", f"{_OLD}.mlp.down"),
        *linear("ln_f", "decoder.final_norm"),
        Rule("lm_head.weight", "head.out.weight"),
    ]
)


def save_weights(model: Transformer, directory: str | Path, metadata: dict[str, str] | None = None):
    with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp), metadata=metadata)


def save_model_dir(model: Transformer, directory: str | Path) -> Path:
    """An lmforge model directory: config.json ({"model": ...}) and model.safetensors."""
    directory = Path(directory)
    save_weights(model, directory)
    write_json(directory / CONFIG_FILE, {"model": model.config.model_dump(mode="json")})
    return directory


def read_config_json(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise LmforgeError(f"{directory} is not a model directory: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LmforgeError(f"{path} is not a model config (a JSON object)")
    return data


def is_hf_directory(directory: str | Path) -> bool:
    return "model_type" in read_config_json(directory)


def read_model_config(directory: str | Path) -> ModelConfig:
    """The model section of an lmforge directory's config.json."""
    data = read_config_json(directory)
    if "model" not in data:
        raise LmforgeError(
            f"{directory}/{CONFIG_FILE} has neither 'model' (lmforge) nor 'model_type' "
            "(Hugging Face); it is not a model config"
        )
    try:
        return ModelConfig.model_validate(data["model"])
    except ValueError as e:
        raise LmforgeError(
            f"{directory}/{CONFIG_FILE} is corrupt or not an lmforge config ({e}); retrain"
        ) from None


def read_tensors(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of model.safetensors, or of the shards its index lists; and the metadata."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LmforgeError(f"{index} is corrupt ({e!r}); it needs a 'weight_map'") from None
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise LmforgeError(f"{index} lists shards that are missing: {', '.join(absent)}")
    else:
        other = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
        hint = f" (found {', '.join(other)}: only safetensors are read)" if other else ""
        raise LmforgeError(f"no {WEIGHTS_FILE} in {directory}{hint}; no weights saved yet")
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for path in files:
        try:
            with safe_open(str(path), "pt") as f:
                metadata.update(f.metadata() or {})
                for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    tensors[name] = f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise LmforgeError(
                f"{path} is truncated or corrupt ({str(e).splitlines()[0]}); "
                "delete it and retrain, or resume from a good copy"
            ) from None
    return tensors, metadata


def name_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)}: {shown}{more}"


def tied_names(model: torch.nn.Module) -> dict[str, set[str]]:
    """Each parameter name -> the other names of the same tensor (tied weights)."""
    names: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(name)
    return {name: group - {name} for group in names.values() for name in group}


def assign_weights(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    source: str,
    layout: WeightMap | None = None,
    optional: tuple[str, ...] = (),
) -> None:
    """Fill `model` from `tensors` (named as in `layout`, or as ours), or raise one
    LmforgeError listing every missing, unexpected and mis-shaped tensor. A tied weight needs
    only one of its names; `optional` names keep their initial values when absent."""
    shapes = {name: t.shape for name, t in model.state_dict().items()}
    if layout is None:
        found = Translation()
        for name, tensor in tensors.items():
            if name not in shapes:
                found.unexpected.append(name)
            elif tensor.shape != shapes[name]:
                found.misshaped.append(
                    f"{name} {tuple(tensor.shape)}, expected {tuple(shapes[name])}"
                )
            else:
                found.ours[name] = tensor
    else:
        found = layout.to_ours(tensors, shapes)
    aliases = tied_names(model)
    missing = [
        name
        for name in shapes
        if name not in found.ours
        and not aliases.get(name, set()) & found.ours.keys()
        and name not in optional
    ]
    theirs = layout.theirs_name if layout is not None else str
    problems = []
    if missing:
        problems.append(f"missing {name_list(sorted({theirs(n) for n in missing}))}")
    if found.unexpected:
        problems.append(f"unexpected {name_list(sorted(found.unexpected))}")
    if found.misshaped:
        problems.append(f"wrong shape {name_list(sorted(found.misshaped))}")
    if problems:
        raise LmforgeError(
            f"{source} does not match the model {CONFIG_FILE} describes: {'; '.join(problems)}"
        )
    model.load_state_dict(found.ours, strict=False)


def load_weights(model: Transformer, directory: str | Path) -> dict[str, str]:
    """Fill `model` from an lmforge directory's weights; returns the file's metadata."""
    tensors, metadata = read_tensors(directory)
    fill_weights(model, tensors, Path(directory) / WEIGHTS_FILE)
    return metadata


def fill_weights(model: Transformer, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Fill `model` from the tensors of an lmforge weights file (current or legacy names)."""
    legacy = "blocks.0.attn.qkv.weight" in tensors
    assign_weights(model, tensors, str(source), LEGACY_LAYOUT if legacy else None)
