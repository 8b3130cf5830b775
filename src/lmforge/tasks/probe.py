"""The linear probe a classification fine-tune is reported beside.

Logistic regression on the frozen base's sequence vectors: the vector the new head reads (the
pooling `config.sequence_pooling` names), computed once for the training and validation
records, then a multinomial linear model fitted to them by L-BFGS with a small L2 penalty.
It costs one forward pass over the data, so every fine-tune can print it: a fine-tune that
does not beat it has not used its extra capacity (issue 21; `--method probe` trains the same
kind of model with the fine-tuning loop instead). The fitted layer then starts the new head
(`train.head_from_probe`), so fine-tuning begins where the probe ended.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def sequence_vectors(task, model, records: list[dict], batch_size: int = 32) -> torch.Tensor:
    """(len(records), n_embd): the input of `model`'s classification head for each record, in
    order, with the model in eval mode (no dropout)."""
    seen: list[torch.Tensor] = []
    handle = model.head.out.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().float().cpu())
    )
    try:
        task.probabilities(model, [(r["text"], r.get("text_b")) for r in records], batch_size)
    finally:
        handle.remove()
    return torch.cat(seen) if seen else torch.empty(0, model.head.out.in_features)


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float = 1e-3, iterations: int = 200
) -> nn.Linear:
    """A multinomial logistic regression on standardised features: mean cross-entropy plus
    `l2` times the squared weights, minimised by L-BFGS from zero."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    linear = nn.Linear(x.shape[1], num_labels, dtype=x.dtype)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(z), y) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():  # fold the standardisation into the weights: raw features in
        linear.weight.div_(std)
        linear.bias.sub_(linear.weight @ mean)
    return linear


def linear_probe(
    task, model, train_records: list[dict], valid_records: list[dict]
) -> tuple[dict, nn.Linear]:
    """The task's metrics on `valid_records` for a logistic regression fitted on the frozen
    model's sequence vectors of `train_records`, and the fitted layer (it reads the same
    vector as the model's head, so it can start the head: linear probing, then fine-tuning,
    as Kumar et al., ICLR 2022)."""
    index = {label: i for i, label in enumerate(task.labels)}
    x = sequence_vectors(task, model, train_records)
    y = torch.tensor([index[r["label"]] for r in train_records])
    linear = fit_logistic_regression(x, y, task.num_labels)
    with torch.no_grad():
        scores = linear(sequence_vectors(task, model, valid_records)).softmax(-1)
    predictions = [
        {"label": task.labels[int(i)], "score": float(p[i])}
        for i, p in zip(scores.argmax(-1), scores, strict=True)
    ]
    return task.score(predictions, valid_records), linear
