"""Autoregressive sampling: temperature, top-k, a seed, and stop tokens.

The model sees at most `block_size` tokens; longer contexts keep the most recent ones.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick next tokens from (batch, vocab) logits; temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop_ids: tuple[int, ...] = (),
) -> list[int]:
    """Return the new token ids (prompt excluded)."""
    if not prompt_ids:
        raise LmforgeError("the prompt is empty after tokenization; give some text")
    if temperature < 0:
        raise LmforgeError(f"temperature must be >= 0 (got {temperature})")
    if top_k < 0:
        raise LmforgeError(f"top_k must be >= 0 (got {top_k})")
    device = next(model.parameters()).device
    block_size = model.config.block_size
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(ids[:, -block_size:])[:, -1, :]
        next_id = sample_next(logits, temperature, top_k, generator)
        token = int(next_id.item())
        if token in stop_ids:
            break
        new.append(token)
        ids = torch.cat([ids, next_id], dim=1)
    model.train(was_training)
    return new
