"""What every application shares: the task interface, task settings in a model directory, and
putting a task head on a base model.

A task turns records (see records.py) into training examples, batches them, computes the
training loss, predicts from raw records and scores predictions with the metric people report.
A fine-tuned model directory is an ordinary model directory whose config.json also has a
"task" section (`settings`): the task's name, field names, labels, lengths; `load_task_model`
(tasks/registry.py) reads it back for `lmforge evaluate TASK` and `lmforge.pipeline`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.models import Transformer
from lmforge.models.io import read_config_json
from lmforge.tasks.records import read_records
from lmforge.tokenizers import Tokenizer


class Task(ABC):
    """One application. Subclasses set the class attributes and implement the methods."""

    name: str
    head: str  # the model head it trains ("sequence-classification", "lm", ...)
    metric: str  # the validation figure early stopping watches
    higher_is_better: bool = True  # of the metric (a loss is not)
    roles: dict[str, Callable]  # role -> checker (records.py)
    optional: tuple[str, ...] = ()

    def __init__(self, tokenizer: Tokenizer, model_config, settings: dict):
        self.tokenizer = tokenizer
        self.config = model_config
        self.settings = settings

    # ------------------------------------------------------------------ data

    @classmethod
    def read(cls, path: str | Path, fields: dict[str, str] | None = None) -> list[dict]:
        return read_records(path, cls.roles, fields, cls.optional)

    @classmethod
    def settings_from(cls, records: list[dict], options: dict) -> dict:
        """The settings fine-tuning fixes from the training data and options (labels, ...)."""
        return dict(options)

    @classmethod
    def adopt_base(cls, base: str | Path, settings: dict) -> dict:
        """The settings with what the task keeps from the base model directory (chat: its
        chat template); also how a base model, not fine-tuned, is scored on the task."""
        return settings

    def write_files(self, directory: Path) -> None:  # noqa: B027 (most tasks need none)
        """Files of the task's own beside the fine-tuned model (chat: its template)."""

    @property
    def num_labels(self) -> int:
        return 2  # unused unless the head classifies

    @property
    def max_length(self) -> int:
        return min(
            self.settings.get("max_length") or self.config.block_size, self.config.block_size
        )

    @abstractmethod
    def examples(self, records: list[dict]) -> list[dict]:
        """Training examples: dicts of id lists with at least 'input_ids'."""

    @abstractmethod
    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    @abstractmethod
    def predict(self, model: torch.nn.Module, records: list[dict], batch_size: int = 32) -> list:
        """One prediction per record, in the form the pipeline returns."""

    @abstractmethod
    def score(self, predictions: list, records: list[dict]) -> dict:
        """The metric table: floats, plus any details (per class, confusion matrix)."""

    def check_records(self, records: list[dict]) -> None:  # noqa: B027 (most tasks need none)
        """Stop on records this fine-tuned model cannot be scored on (unseen labels, ...)."""

    # ------------------------------------------------------------------ helpers

    def pad_id(self) -> int:
        tok = self.tokenizer
        for name in (tok.pad_token, "[PAD]", "<pad>", "<|endoftext|>"):
            if name and tok.token_to_id(name) is not None:
                return tok.token_to_id(name)
        return 0  # padding is masked out, so any id will do

    def pad(self, rows: list[list[int]], value: int | None = None) -> torch.Tensor:
        """Right-pad lists of ids into one (batch, longest) tensor."""
        value = self.pad_id() if value is None else value
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    def inputs(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """The padded ids, attention mask and token types of single-stack examples."""
        ids = [e["input_ids"] for e in examples]
        return {
            "input_ids": self.pad(ids),
            "attention_mask": self.mask(ids),
            "token_type_ids": self.pad([e["token_type_ids"] for e in examples], 0),
        }

    def mask(self, rows: list[list[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])


def with_head(
    base: Transformer, head: str, num_labels: int = 2, pooling: str | None = None
) -> Transformer:
    """A copy of `base` with `head` on top: the body's weights carried over, a new head
    initialised as the model initialises (reading the sequence vector `pooling` names, for
    a sequence-classification head). The LM head stays as it is (generative tasks)."""
    c = base.config
    pooling = pooling or c.pooling
    same_labels = head not in HEAD_WITH_LABELS or num_labels == c.num_labels
    if head == c.head and same_labels and pooling == c.pooling:
        return base
    config = c.model_copy(update={"head": head, "num_labels": num_labels, "pooling": pooling})
    model = Transformer(config)
    body = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    stray = [k for k in missing if not k.startswith("head.")]
    if stray or unexpected:  # cannot happen with one config; guard the invariant anyway
        raise LmforgeError(f"could not carry the base model over: {stray + list(unexpected)}")
    return model.to(next(base.parameters()).device)


HEAD_WITH_LABELS = {"sequence-classification", "token-classification"}


def with_settings(model: Transformer, **update) -> Transformer:
    """A copy of `model` built with config fields `update` (e.g. dropout=0.2), every weight,
    the head's included, carried over: for settings that change no weight's shape."""
    config = model.config.model_copy(update=update)
    if config == model.config:
        return model
    copy = Transformer(config)
    copy.load_state_dict(model.state_dict())
    return copy.to(next(model.parameters()).device)


def task_settings(directory: str | Path) -> dict | None:
    """The "task" section of a model directory's config.json, if it was fine-tuned."""
    return read_config_json(directory).get("task")
