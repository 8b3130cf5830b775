"""Which input tokens a prediction rests on: integrated gradients and gradient x input over
the input embeddings.

Integrated gradients (Sundararajan et al., 2017) follow the straight path from a baseline x'
to the input x and sum the gradients along it:

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i  da

The integral is a quadrature with `steps` nodes: Gauss-Legendre (exact for polynomials of
degree 2*steps - 1) or the trapezoid rule (textbook weights summing to 1; captum's
`riemann_trapezoid` weighs by 1/steps and so sums to (steps-1)/steps, a difference
tests/interpret/test_attribution.py pins down). Completeness, sum_i IG_i = F(x) - F(x'), holds
for the exact integral; its error measures the quadrature's, and is reported with every
result. Per-token scores sum the attribution over the embedding width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.interpret.hooks import run_with_hooks

METHODS = ("gausslegendre", "riemann_trapezoid")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # embeddings (n, t, d) -> scores (n,)


def quadrature(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) on [0, 1] with sum(weights) = 1."""
    if steps < 2:
        raise LmforgeError(f"integrated gradients need at least 2 steps, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((nodes + 1) / 2), torch.tensor(weights / 2)
    if method == "riemann_trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), torch.tensor(weights)
    raise LmforgeError(f"unknown integration method '{method}'; choose {', '.join(METHODS)}")


@dataclass
class Attribution:
    """attributions: (t, d) per embedding coordinate; scores: (t,) per token (their sum);
    target / baseline: F at the input and the baseline; completeness_error:
    sum(scores) - (target - baseline), 0 for gradient x input (not defined there)."""

    attributions: torch.Tensor
    scores: torch.Tensor
    target: float
    baseline: float
    completeness_error: float


def integrated_gradients(
    fn: ScoreFn,
    inputs: torch.Tensor,
    baseline: torch.Tensor | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = 16,
) -> Attribution:
    """IG of `fn` at `inputs` (t, d) from `baseline` (default zeros), `steps` nodes
    evaluated `batch_size` at a time."""
    inputs = inputs.detach()
    baseline = torch.zeros_like(inputs) if baseline is None else baseline.detach()
    alphas, weights = quadrature(steps, method)
    alphas, weights = alphas.to(inputs.dtype), weights.to(inputs.dtype)
    delta = inputs - baseline
    total = torch.zeros_like(inputs)
    for start in range(0, steps, batch_size):
        a = alphas[start : start + batch_size].to(inputs.device)
        points = (baseline + a[:, None, None] * delta).requires_grad_(True)
        (grads,) = torch.autograd.grad(fn(points).sum(), points)
        w = weights[start : start + batch_size].to(inputs.device)
        total += (w[:, None, None] * grads).sum(0)
    attributions = delta * total
    with torch.no_grad():
        ends = fn(torch.stack([inputs, baseline]))
    target, base = float(ends[0]), float(ends[1])
    scores = attributions.sum(-1)
    return Attribution(attributions, scores, target, base, float(scores.sum()) - (target - base))


def gradient_x_input(fn: ScoreFn, inputs: torch.Tensor) -> Attribution:
    """grad F(x) * x: the first-order share of each coordinate, one backward pass."""
    x = inputs.detach().clone().requires_grad_(True)
    out = fn(x[None])
    (grad,) = torch.autograd.grad(out.sum(), x)
    attributions = (grad * x).detach()
    return Attribution(attributions, attributions.sum(-1), float(out[0].detach()), 0.0, 0.0)


def embedding_score_fn(
    model: nn.Module,
    input_ids: torch.Tensor,
    pick: Callable[[torch.Tensor], torch.Tensor],
    **kwargs,
) -> ScoreFn:
    """F(embeddings) for the one sequence `input_ids` (1, t): the model run with its token
    embeddings replaced by the given ones (the `embed` hook), `pick` taking each row's score
    from the output. Other keyword tensors (token_type_ids) are repeated per row."""
    if getattr(model, "encoder", None) is not None and getattr(model, "decoder", None):
        raise LmforgeError(
            "attribution over input embeddings supports decoder and encoder models, "
            "not encoder-decoders"
        )

    def fn(embeds: torch.Tensor) -> torch.Tensor:
        n = embeds.size(0)
        extra = {k: v.expand(n, *v.shape[1:]) for k, v in kwargs.items() if v is not None}
        out = run_with_hooks(
            model, {"embed": lambda t, name: embeds}, input_ids.expand(n, -1), **extra
        )
        return pick(out)

    return fn


def token_embeddings(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(t, d): the token-table rows of the one sequence `input_ids` (1, t)."""
    return model.tok_embed(input_ids)[0].detach()


def attribute(
    model: nn.Module,
    input_ids: torch.Tensor,
    pick: Callable[[torch.Tensor], torch.Tensor],
    method: str = "integrated-gradients",
    baseline: torch.Tensor | int | None = None,
    steps: int = 50,
    quadrature_method: str = "gausslegendre",
    **kwargs,
) -> Attribution:
    """Attribute `pick(model(input_ids, **kwargs))` to the input embeddings of the one
    sequence `input_ids` (1, t). `method`: "integrated-gradients" or "gradient-x-input";
    `baseline` for IG: None (zero vectors), a token id (its embedding at every position, say
    [MASK] or padding) or a (t, d) tensor."""
    if input_ids.dim() != 2 or input_ids.size(0) != 1:
        raise LmforgeError(f"attribution takes one sequence (1, t), got {tuple(input_ids.shape)}")
    inputs = token_embeddings(model, input_ids)
    fn = embedding_score_fn(model, input_ids, pick, **kwargs)
    if method == "gradient-x-input":
        return gradient_x_input(fn, inputs)
    if method != "integrated-gradients":
        raise LmforgeError(
            f"unknown attribution method '{method}'; choose integrated-gradients or "
            "gradient-x-input"
        )
    if isinstance(baseline, int):
        row = model.tok_embed(torch.tensor([baseline], device=inputs.device))
        baseline = row.detach().expand_as(inputs)
    return integrated_gradients(fn, inputs, baseline, steps, quadrature_method)


def next_token_pick(token: int, position: int = -1):
    """The LM's logit for `token` at `position`."""
    return lambda logits: logits[:, position, token]


def class_pick(label: int):
    """A classifier's logit for class `label`."""
    return lambda logits: logits[:, label]
