"""Sentence embeddings from an encoder, as sentence-transformers computes them: tokenize,
run the encoder, average the real tokens' final hidden states (mean pooling), normalise to
unit length, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmforge.models.heads import mean_pool
from lmforge.models.transformer import Transformer

if TYPE_CHECKING:  # models/ does not depend on tokenizers/; any Tokenizer will do
    from lmforge.tokenizers import Tokenizer


def max_length_of(directory: str | Path, model: Transformer) -> int:
    """sentence-transformers' max_seq_length where the directory gives one, else the
    model's context."""
    path = Path(directory) / "sentence_bert_config.json"
    try:
        return int(json.loads(path.read_text("utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return model.config.block_size


# sentence-transformers' 1_Pooling/config.json flags -> our pooling names
_ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "first"}


def sentence_pooling(directory: str | Path) -> str | None:
    """The pooling a sentence-transformers model was trained with ("mean" or "first"), read
    from its modules.json and Pooling config; None where the directory says nothing (or
    names a pooling we do not have, such as max)."""
    directory = Path(directory)
    try:
        modules = json.loads((directory / "modules.json").read_text("utf-8"))
        path = next(m["path"] for m in modules if m.get("type", "").endswith(".Pooling"))
        flags = json.loads((directory / path / "config.json").read_text("utf-8"))
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return None
    chosen = [ours for flag, ours in _ST_POOLING.items() if flags.get(flag) is True]
    others = [k for k, v in flags.items() if k.startswith("pooling_mode") and v is True]
    return chosen[0] if len(chosen) == 1 and len(others) == 1 else None


@torch.no_grad()
def sentence_embeddings(
    model: Transformer,
    tokenizer: Tokenizer,
    texts: list[str],
    max_length: int | None = None,
    batch_size: int = 32,
    normalize: bool = True,
) -> torch.Tensor:
    """(len(texts), n_embd) embeddings; texts longer than `max_length` tokens are cut."""
    device = next(model.parameters()).device
    max_length = max_length or model.config.block_size
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.tokenize_batch(
            texts[start : start + batch_size], padding="longest", max_length=max_length
        )
        ids = torch.tensor([e.ids for e in batch], device=device)
        mask = torch.tensor([e.attention_mask for e in batch], device=device)
        types = torch.tensor([e.type_ids for e in batch], device=device)
        hidden = model.body(ids, mask, types).hidden
        out.append(mean_pool(hidden, mask))
    vectors = torch.cat(out) if out else torch.empty(0, model.config.n_embd)
    return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors
