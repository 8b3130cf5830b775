"""The scaffold every training job stands on (pretraining and each fine-tuning task):

- `launch`: this process's device, its place in the parallel plan (under torchrun), the
  precision, and quiet logging on every rank but 0;
- `RunDir`: the output directory, which is only replaced when asked and only if it is an
  lmforge one, built beside itself (`.NAME.incomplete`) and swapped in whole, so bad input
  never costs an existing run or leaves half a new one; its config.json and results.json;
- typed results, readable as attributes and, as before, as a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lmforge.config import TrainConfig
from lmforge.device import resolve_precision
from lmforge.errors import LmforgeError
from lmforge.fileio import staged_directory, write_json
from lmforge.train import distributed
from lmforge.train.checkpoint import has_checkpoint
from lmforge.train.distributed import ParallelPlan


@dataclass(frozen=True)
class Launch:
    device: torch.device
    plan: ParallelPlan
    precision: str  # concrete: fp32 or bf16
    log: Callable[[str], None]
    progress: bool


def launch(t: TrainConfig, log: Callable[[str], None] = print, progress: bool = True) -> Launch:
    """Set this process up for a job: the device (joining torchrun's process group when
    there is one), the parallel plan, the precision `auto` resolves to; rank 0 speaks for
    all."""
    device = distributed.setup(t.device)
    if not distributed.is_main():
        log, progress = (lambda message: None), False
    plan = ParallelPlan.resolve(t.parallel, t.tp_size, log)
    precision = resolve_precision(t.precision, device)
    return Launch(device, plan, precision, log, progress)


class RunDir:
    """A job's output directory. `flags` name the command's options in messages: the one
    that replaces (`overwrite`) and the one that picks another directory (`other`)."""

    def __init__(self, path: str | Path, overwrite: str, other: str):
        self.path = Path(path)
        self.flags = {"overwrite": overwrite, "other": other}

    def saved_config(self) -> dict | None:
        try:
            return json.loads((self.path / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def check_replaceable(self, overwrite: bool, what: str = "run directory") -> None:
        """Refuse to replace an existing directory unless asked, and one that is not an
        lmforge run or model even then."""
        if not self.exists():
            return
        if not overwrite:
            raise LmforgeError(
                f"{what} {self.path} already exists; continue it with --resume, replace it "
                f"with {self.flags['overwrite']}, or choose another {self.flags['other']}"
            )
        if self.saved_config() is None and not has_checkpoint(self.path):
            raise LmforgeError(
                f"{self.path} is not an lmforge run directory; refusing to delete it"
            )

    def staged(self):
        """A fresh folder beside the run to fill; on success it replaces the run (the old
        one is deleted only once the new one is in place), on any error it is removed."""
        return staged_directory(self.path)

    def write_config(self, data: dict) -> None:
        write_json(self.path / "config.json", data)

    def write_results(self, results: Results) -> None:
        write_json(self.path / "results.json", results.to_json())


class Results(Mapping):
    """A typed result that also reads as the dict it used to be (`result["steps"]`);
    `to_json()` is what results.json holds (fields in `NOT_SAVED` are returned only)."""

    NOT_SAVED: tuple[str, ...] = ()

    def _dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str):
        if key not in self._dict():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._dict())

    def __len__(self) -> int:
        return len(fields(self))

    def to_json(self) -> dict:
        return {k: v for k, v in self._dict().items() if k not in self.NOT_SAVED}


@dataclass(frozen=True)
class PretrainResult(Results):
    steps: int
    stopped_by_time_budget: bool
    stopped_early: bool
    best_eval: dict | None
    valid_loss_nats_per_token: float
    valid_bits_per_byte: float | None
    valid_tokens: int
    parameters: int
    device: str
    precision: str
    minutes: float
    sample: str = ""

    NOT_SAVED = ("sample",)


@dataclass(frozen=True)
class FinetuneResult(Results):
    task: str
    valid: dict
    best_step: int
    steps: int
    stopped_early: bool
    stopped_by_time_budget: bool
    train_records: int
    valid_records: int
    parameters: int
    device: str
    precision: str
    minutes: float
    method: str = "full"
    trainable_parameters: int = 0
    probe: dict | None = None  # a classification fine-tune's linear-probe baseline (valid)
