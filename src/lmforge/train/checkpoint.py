"""Resumable training state beside the weights.

`model.safetensors` holds the weights (step in its metadata); `train_state.pt` holds the
optimizer state, the RNG state and the step. Both are written atomically; the step recorded in
each must agree, so a crash between the two writes is detected instead of resumed silently.
The data position needs no saving: batches are a function of the step (see data/loader.py).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path
from lmforge.models.io import WEIGHTS_FILE, load_weights, save_weights

STATE_FILE = "train_state.pt"


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STATE_FILE).is_file()


def save_checkpoint(run_dir: str | Path, model, optimizer, step: int, extra: dict) -> None:
    run_dir = Path(run_dir)
    save_weights(model, run_dir, metadata={"step": str(step)})
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **extra,
    }
    with atomic_path(run_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)


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
    metadata = load_weights(model, run_dir)
    if metadata.get("step") != str(state.get("step")):
        raise LmforgeError(
            f"{run_dir}: {WEIGHTS_FILE} is from step {metadata.get('step')} but {STATE_FILE} "
            f"from step {state.get('step')} (interrupted while saving); "
            "start again with --run.overwrite=true"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise LmforgeError(f"{path}: optimizer state does not fit this model ({e})") from None
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state
