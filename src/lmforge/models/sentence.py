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
