"""From next-token logits to a choice: penalties, temperature, top-k, top-p, min-p.

The steps run in the order Hugging Face's `generate` runs its processors, so the same
settings give the same distribution:

1. penalties on tokens already in the sequence (prompt included): the repetition penalty
   of Keskar et al. (2019) divides a positive logit by `repetition_penalty` and multiplies a
   negative one; the frequency and presence penalties (as in OpenAI's API) subtract
   `frequency_penalty` per earlier use and `presence_penalty` once;
2. temperature divides the logits (0 means greedy: take the arg max, no filters);
3. top-k keeps the k largest logits (ties with the k-th stay);
4. top-p (nucleus) keeps the most likely tokens until their probability reaches p: a token
   stays when the tokens ranked above it hold less than p;
5. min-p keeps tokens at least `min_p` times as likely as the most likely one.

Filters set the logits they drop to -inf; the most likely token always survives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0 (got {self.temperature})"),
            (self.top_k >= 0, f"top_k must be >= 0, 0 for no limit (got {self.top_k})"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1] (got {self.top_p})"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1] (got {self.min_p})"),
            (
                self.repetition_penalty > 0,
                f"repetition_penalty must be > 0, 1 for none (got {self.repetition_penalty})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise LmforgeError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def penalize(self, logits: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """Step 1 on (batch, vocab) logits; `history` (batch, time) holds the ids so far,
        negative ids (padding) ignored."""
        penalized = self.repetition_penalty != 1 or self.frequency_penalty or self.presence_penalty
        if history is None or history.numel() == 0 or not penalized:
            return logits
        real = history >= 0
        ids = history.clamp(min=0)
        counts = torch.zeros_like(logits).scatter_add_(1, ids, real.to(logits.dtype))
        seen = counts > 0
        logits = logits.clone()
        if self.repetition_penalty != 1:
            p = self.repetition_penalty
            logits = torch.where(seen, torch.where(logits < 0, logits * p, logits / p), logits)
        return logits - self.frequency_penalty * counts - self.presence_penalty * seen

    def filter(self, logits: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Steps 1-5: the logits whose softmax is the distribution to draw from."""
        logits = self.penalize(logits.float(), history)
        if self.greedy:
            return logits
        logits = logits / self.temperature
        drop = torch.zeros_like(logits, dtype=torch.bool)
        if 0 < self.top_k < logits.size(-1):
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            drop |= logits < kth
            logits = logits.masked_fill(drop, -torch.inf)
        if self.top_p < 1:
            ranked, order = logits.sort(dim=-1, descending=True)
            above = ranked.softmax(-1).cumsum(-1) - ranked.softmax(-1)  # mass ranked higher
            drop |= torch.zeros_like(drop).scatter(-1, order, above >= self.top_p)
            logits = logits.masked_fill(drop, -torch.inf)
        if self.min_p > 0:
            probs = logits.softmax(-1)
            drop |= probs < self.min_p * probs.max(-1, keepdim=True).values
        return logits.masked_fill(drop, -torch.inf)

    def choose(
        self,
        logits: torch.Tensor,
        history: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Next ids, (batch,), from (batch, vocab) logits."""
        filtered = self.filter(logits, history)
        if self.greedy:
            return filtered.argmax(-1)
        probs = filtered.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
