"""Resumable training state beside the weights, and the checkpoint before it.

`model.safetensors` holds the weights (step in its metadata); `train_state.pt` holds the
optimizer state, the RNG state and the step. Both are written atomically; the step recorded in
each must agree, so a crash between the two writes is detected instead of resumed silently.
The data position needs no saving: batches are a function of the step (see data/loader.py).

Before a new checkpoint is written, the latest one is hard-linked into `previous/` (a copy
where the file system has no hard links), so at every moment at least one of the two pairs is
whole. A resume whose latest pair is missing a file, truncated, corrupt or from two steps falls
back to `previous/` with a warning, and puts that pair back as the latest, so
`model.safetensors` holds the last good weights again.

Under torchrun every rank takes part in gathering the full (unsharded) state and rank 0 writes
it, in the single-process format: a checkpoint written by FSDP, TP or DDP loads in one process
and the other way round (see train/distributed.py).
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_link, atomic_path
from lmforge.models.io import WEIGHTS_FILE, fill_weights, read_tensors, tied_names
from lmforge.train import distributed

STATE_FILE = "train_state.pt"
PREVIOUS_DIR = "previous"  # the checkpoint before the latest


def has_checkpoint(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((d / STATE_FILE).is_file() for d in (run_dir, run_dir / PREVIOUS_DIR))


def save_checkpoint(run_dir: str | Path, model, optimizer, step: int, extra: dict) -> None:
    """Every rank must call this (the state is gathered from all of them); rank 0 writes."""
    run_dir = Path(run_dir)
    weights, optimizer_state = distributed.full_state(model, optimizer)
    if distributed.is_main():
        if (run_dir / STATE_FILE).is_file() and (run_dir / WEIGHTS_FILE).is_file():
            _copy_pair(run_dir, run_dir / PREVIOUS_DIR)
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


def _copy_pair(source: Path, target: Path) -> None:
    """Link one pair over another. A crash in between the two files leaves the target's steps
    disagreeing, which a resume detects, while the source pair stays whole."""
    for name in (WEIGHTS_FILE, STATE_FILE):
        atomic_link(source / name, target / name)


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


class _Unusable(Exception):
    """A checkpoint pair that cannot be resumed from; the message names the file and why."""


def _read_pair(directory: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """The state, the weights and their metadata of one checkpoint pair, checked whole."""
    path = directory / STATE_FILE
    if not path.is_file():
        raise _Unusable(f"{path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise _Unusable(f"{path} is truncated or corrupt ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(state, dict) or not {"step", "optimizer", "rng_cpu"} <= state.keys():
        raise _Unusable(f"{path} is corrupt (not a training state)")
    try:
        tensors, metadata = read_tensors(directory)
    except LmforgeError as e:  # a missing or damaged weights file
        raise _Unusable(str(e).rsplit("; ", 1)[0]) from None  # without the advice
    if metadata.get("step") != str(state["step"]):
        raise _Unusable(
            f"{directory}: {WEIGHTS_FILE} is from step {metadata.get('step')} but {STATE_FILE} "
            f"from step {state['step']} (interrupted while saving)"
        )
    return state, tensors, metadata


def load_checkpoint(run_dir: str | Path, model, optimizer) -> dict:
    """Restore model, optimizer and RNG from the latest whole checkpoint pair (the previous
    one, with a warning, when the latest is damaged); returns the saved state (with 'step')."""
    run_dir = Path(run_dir)
    previous = run_dir / PREVIOUS_DIR
    fell_back = False
    try:
        state, tensors, _ = _read_pair(run_dir)
    except _Unusable as latest:
        if not (previous / STATE_FILE).is_file():
            raise LmforgeError(
                f"{latest}, and there is no previous checkpoint to fall back on; "
                "start again with --run.overwrite=true"
            ) from None
        try:
            state, tensors, _ = _read_pair(previous)
        except _Unusable as also:
            raise LmforgeError(
                f"{latest}, and the previous checkpoint is unusable too ({also}); "
                "start again with --run.overwrite=true"
            ) from None
        fell_back = True
        if distributed.is_main():
            print(
                f"warning: {latest}; resuming from the previous checkpoint "
                f"(step {state['step']}, {previous})",
                file=sys.stderr,
            )
    path = (previous if fell_back else run_dir) / STATE_FILE
    # The saved param groups carry their kernel choice (fused, foreach); keep this run's.
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    if distributed.is_sharded(model):
        _load_sharded(path.parent, tensors, model, optimizer, state["optimizer"])
    else:
        fill_weights(distributed.unwrap(model), tensors, path.parent / WEIGHTS_FILE)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise LmforgeError(f"{path}: optimizer state does not fit this model ({e})") from None
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    if fell_back:
        distributed.barrier()  # every rank has read previous/ before rank 0 relinks it
        if distributed.is_main():  # the damaged pair must not become the next previous/
            _copy_pair(previous, run_dir)
    return state


def _load_sharded(directory: Path, tensors: dict, model, optimizer, optimizer_state: dict) -> None:
    """Every rank reads the full checkpoint and keeps its own pieces (FSDP, TP)."""
    for name, aliases in tied_names(model).items():  # the file holds one name of tied tensors
        if name not in tensors and aliases & tensors.keys():
            tensors[name] = tensors[min(aliases & tensors.keys())]
    try:
        distributed.load_full_state(model, optimizer, tensors, optimizer_state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise LmforgeError(
            f"{directory}: checkpoint does not fit this model ({str(e).splitlines()[0][:120]})"
        ) from None


BEST_FILE = "best.safetensors"


def save_best(run_dir: str | Path, model, step: int) -> None:
    """The weights of the best evaluation so far, beside the checkpoint (every rank calls
    this; rank 0 writes)."""
    weights = distributed.full_state(model, None)[0]
    if distributed.is_main():
        module = distributed.unwrap(model)
        _write_weights(Path(run_dir) / BEST_FILE, weights, tied_names(module), {"step": str(step)})
    distributed.barrier()
