"""Resumable training state beside the weights.

`model.safetensors` holds the weights (step in its metadata); `train_state.pt` holds the
optimizer state, the RNG state and the step. Both are written atomically; the step recorded in
each must agree, so a crash between the two writes is detected instead of resumed silently.
The data position needs no saving: batches are a function of the step (see data/loader.py).

Under torchrun every rank takes part in gathering the full (unsharded) state and rank 0 writes
it, in the single-process format: a checkpoint written by FSDP, TP or DDP loads in one process
and the other way round (see train/distributed.py).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path
from lmforge.models.io import WEIGHTS_FILE, load_weights, read_tensors, tied_names
from lmforge.train import distributed

STATE_FILE = "train_state.pt"


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STATE_FILE).is_file()


def save_checkpoint(run_dir: str | Path, model, optimizer, step: int, extra: dict) -> None:
    """Every rank must call this (the state is gathered from all of them); rank 0 writes."""
    run_dir = Path(run_dir)
    weights, optimizer_state = distributed.full_state(model, optimizer)
    if distributed.is_main():
        tied = tied_names(distributed.unwrap(model))
        _write_weights(run_dir / WEIGHTS_FILE, weights, tied, {"step": str(step)})
        state = {
            "step": step,
            "optimizer": optimizer_state,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **extra,
        }
        with atomic_path(run_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)
    distributed.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet


def _write_weights(path: Path, weights: dict, tied: dict, metadata: dict) -> None:
    """safetensors' save_model on a state dict: of tied names keep the first in sort order,
    recording the others in the metadata."""
    kept, metadata = {}, dict(metadata)
    for name, tensor in weights.items():
        first = min({name} | (tied.get(name, set()) & weights.keys()))
        if first == name:
            kept[name] = tensor.contiguous()
        else:
            metadata.setdefault(name, first)
    with atomic_path(path) as tmp:
        save_file(kept, str(tmp), metadata=metadata)


def load_checkpoint(run_dir: str | Path, model, optimizer) -> dict:
    """Restore model, optimizer and RNG; returns the saved state (with 'step')."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise LmforgeError(
            f"{path} is truncated or corrupt ({str(e).splitlines()[0][:80]}); "
            "start again with --run.overwrite=true"
        ) from None
    # The saved param groups carry their kernel choice (fused, foreach); keep this run's.
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    if distributed.is_sharded(model):
        metadata = _load_sharded(run_dir, model, optimizer, state["optimizer"])
    else:
        metadata = load_weights(distributed.unwrap(model), run_dir)
    if metadata.get("step") != str(state.get("step")):
        raise LmforgeError(
            f"{run_dir}: {WEIGHTS_FILE} is from step {metadata.get('step')} but {STATE_FILE} "
            f"from step {state.get('step')} (interrupted while saving); "
            "start again with --run.overwrite=true"
        )
    try:
        if not distributed.is_sharded(model):
            optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise LmforgeError(f"{path}: optimizer state does not fit this model ({e})") from None
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state


def _load_sharded(run_dir: Path, model, optimizer, optimizer_state: dict) -> dict[str, str]:
    """Every rank reads the full checkpoint and keeps its own pieces (FSDP, TP)."""
    tensors, metadata = read_tensors(run_dir)
    for name, aliases in tied_names(model).items():  # the file holds one name of tied tensors
        if name not in tensors and aliases & tensors.keys():
            tensors[name] = tensors[min(aliases & tensors.keys())]
    try:
        distributed.load_full_state(model, optimizer, tensors, optimizer_state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise LmforgeError(
            f"{run_dir}: checkpoint does not fit this model ({str(e).splitlines()[0][:120]})"
        ) from None
    return metadata
