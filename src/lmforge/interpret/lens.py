"""The logit lens (nostalgebraist, 2020): read a next-token distribution off the residual
stream after every layer, by sending it through the model's own final norm and head as if the
remaining layers were not there. Where the per-layer loss falls is where the prediction forms.

Layer 0 is the residual stream entering the first block (embeddings and positions), layer L
the stream leaving block L; the last layer's reading is the model's own logits, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.interpret.hooks import run_with_cache
from lmforge.models import BodyOutput


def lens_stack(model: nn.Module) -> str:
    """The stack whose residual stream reaches the head: the decoder's, else the encoder's."""
    return "decoder" if model.decoder is not None else "encoder"


def read_out(model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """The head's output for a residual stream, through the stack's final norm."""
    stack = getattr(model, lens_stack(model))
    hidden = stack.final_norm(resid) if stack.final_norm is not None else resid
    return model.head(BodyOutput(hidden))


@torch.no_grad()
def logit_lens(model: nn.Module, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """(n_layer + 1, batch, time, vocab): the head's logits read after the embeddings and
    after each block of the last stack. `kwargs` go to the model (an encoder-decoder needs
    decoder_input_ids)."""
    s = lens_stack(model)
    n = len(getattr(model, s).blocks)
    names = [f"{s}.0.resid_pre"] + [f"{s}.{i}.resid_post" for i in range(n)]
    _, cache = run_with_cache(model, input_ids, names=names, **kwargs)
    return torch.stack([read_out(model, cache[name]) for name in names])


def lens_losses(lens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of each layer's reading against `targets` (batch, time);
    targets of -100 are left out. lens (layers, batch, time, vocab) -> (layers,)."""
    layers = lens.size(0)
    flat = lens.float().reshape(layers, -1, lens.size(-1))
    return torch.stack(
        [F.cross_entropy(flat[i], targets.reshape(-1), ignore_index=-100) for i in range(layers)]
    )


def top_tokens(lens: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, ids), each (layers, time, k), of the k likeliest tokens of row 0."""
    probs = lens[:, 0].float().softmax(-1)
    return probs.topk(k, dim=-1)
