"""The training objectives, each a small function over logits and targets.

- causal LM: cross-entropy of each next token (GPT);
- masked LM: BERT's corruption (15% of the non-special tokens are chosen; of those 80%
  become [MASK], 10% a random token, 10% stay) and cross-entropy on the chosen only;
- sequence to sequence: cross-entropy over target tokens, padding ignored, optionally with
  label smoothing (the 2017 Transformer used 0.1);
- classification: cross-entropy over classes; extractive QA: the mean of the start and
  end position cross-entropies (as BERT's SQuAD head).

Targets equal to IGNORE (-100, PyTorch's and Hugging Face's convention) count nowhere.
Losses are in nats per token; `bits_per_byte` turns a sum of nats into the tokenizer-free
figure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of (..., vocab) logits against (...) targets; IGNORE targets skipped.
    With reduction='none' the shape of `targets` comes back (0 where ignored)."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORE,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    return loss.view(targets.shape) if reduction == "none" else loss


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> torch.Tensor:
    """Next-token loss when `targets` are the inputs shifted left by one."""
    return token_loss(logits, targets, **kwargs)


def seq2seq_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Target-side loss of an encoder-decoder; pad positions of `labels` hold IGNORE."""
    return token_loss(logits, labels, label_smoothing=label_smoothing)


def mask_tokens(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special: torch.Tensor | None = None,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption of a batch of ids. `special` marks positions never chosen
    (special tokens, padding). Returns (inputs, labels): labels hold the original id where
    a token was chosen and IGNORE elsewhere."""
    if not 0 < probability < 1:
        raise ValueError(f"masking probability must be in (0, 1), got {probability}")
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = draw < probability
    if special is not None:
        chosen &= ~special.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    # One more uniform draw splits the chosen: [0, .8) mask, [.8, .9) random, [.9, 1) keep.
    split = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(chosen & (split < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (split >= 0.8) & (split < 0.9), random_ids, inputs)
    return inputs, labels


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """(batch, classes) logits against (batch,) class ids; `label_smoothing` moves that
    share of each target's probability evenly onto all classes."""
    return F.cross_entropy(
        logits.float(), labels, ignore_index=IGNORE, label_smoothing=label_smoothing
    )


def span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Extractive QA: (batch, time) start and end logits against the answer's token span.
    Positions outside the window (an answer cut off by it) are ignored."""
    t = start_logits.size(-1)
    starts = torch.where((start_positions >= 0) & (start_positions < t), start_positions, IGNORE)
    ends = torch.where((end_positions >= 0) & (end_positions < t), end_positions, IGNORE)
    return 0.5 * (
        F.cross_entropy(start_logits.float(), starts, ignore_index=IGNORE)
        + F.cross_entropy(end_logits.float(), ends, ignore_index=IGNORE)
    )


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """Nats summed over a text's tokens -> bits per byte of that text."""
    return total_nats / math.log(2) / n_bytes
