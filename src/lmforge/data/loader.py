"""Training windows: random (x, y) pairs drawn reproducibly from a token stream.

The window offsets for optimizer step s and micro-batch m come from a generator seeded with
(seed, s, m), so the data position is just the step number: resuming at step s draws exactly
the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lmforge.errors import LmforgeError


class WindowSampler:
    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int):
        if len(tokens) < block_size + 2:
            raise LmforgeError(
                f"the token stream has {len(tokens)} tokens, too few for windows of "
                f"{block_size}; give more text or lower --model.block_size"
            )
        self.tokens, self.block_size, self.batch_size, self.seed = (
            tokens,
            block_size,
            batch_size,
            seed,
        )

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro])
        # a window is block_size + 1 tokens, so the last start is len - block_size - 1
        starts = rng.integers(0, len(self.tokens) - self.block_size, self.batch_size)
        rows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]


def eval_windows(
    tokens: np.ndarray, block_size: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows that predict every token after the first once."""
    n_windows = (len(tokens) - 1) // block_size
    for first in range(0, n_windows, batch_size):
        rows = [
            tokens[i * block_size : (i + 1) * block_size + 1]
            for i in range(first, min(first + batch_size, n_windows))
        ]
        rows = torch.from_numpy(np.stack(rows).astype(np.int64))
        yield rows[:, :-1], rows[:, 1:]
    rest = tokens[n_windows * block_size :]
    if len(rest) > 1:
        rest = torch.from_numpy(np.asarray(rest, dtype=np.int64))[None]
        yield rest[:, :-1], rest[:, 1:]


class ExampleSampler:
    """Batches of fine-tuning examples: epoch e visits the examples in a permutation seeded
    by (seed, e), so, as for windows, the batch of a step is a function of the step alone."""

    def __init__(self, examples: list, batch_size: int, seed: int, collate, grad_accum_steps=1):
        if not examples:
            raise LmforgeError("no training examples")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.collate, self.grad_accum_steps = collate, grad_accum_steps
        self.block_size = max(len(e["input_ids"]) for e in examples)  # for tokens/s

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.examples) // (self.batch_size * self.grad_accum_steps)))

    def batch(self, step: int, micro: int = 0):
        n = len(self.examples)
        first = (step * self.grad_accum_steps + micro) * self.batch_size
        rows = []
        for i in range(first, first + self.batch_size):
            epoch, index = divmod(i, n)
            order = self._order(epoch)
            rows.append(self.examples[order[index]])
        return self.collate(rows)

    def _order(self, epoch: int) -> np.ndarray:
        if getattr(self, "_epoch", None) != epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(
                len(self.examples)
            )
        return self._permutation
