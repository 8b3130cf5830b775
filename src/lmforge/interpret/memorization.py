"""What a model memorised of its training data: canary exposure and verbatim extraction.

Canary exposure ("The Secret Sharer", Carlini et al., USENIX Security 2019): put a random
secret s from a space R (here `digits` random digits, |R| = 10^digits) into the training
corpus, train, then rank s among the alternatives by the model's log-perplexity
-log p(s | prefix):

    exposure(s) = log2 |R| - log2 rank(s)

A secret the model has not seen ranks in the middle (exposure about 1 bit); one it has
memorised ranks first (exposure log2 |R|). Ranking all of R is 10^digits forward passes, so
the rank is estimated from `samples` alternatives drawn uniformly: rank ~ |R| * (1 + the
number of samples scoring better) / (samples + 1), which caps the measurable exposure at
log2(samples + 1). Beyond that cap the paper extrapolates from the distribution of the
alternatives' log-perplexities (section 4.3, a skew-normal fit); we report both the capped
estimate (`exposure`) and the extrapolation from a normal fit, -log2 Phi((x_s - mu) / sigma)
(`exposure_extrapolated`, at most log2 |R|), and say which is which.

The ranking is fair only if every candidate is as many tokens as the others. A subword
tokenizer trained on the canaried corpus breaks that: byte-level BPE learns merges such as
" 8" for exactly the digits the inserted secrets use (a leak of its own), so those secrets
are fewer tokens and rank high for that reason alone. Train the tokenizer on the corpus
without the canaries (benchmarks/interpret.py does); `secret_tokens` and
`alternative_tokens` in each result show whether the lengths agree.

Verbatim extraction: take training sequences, give the model their first `prefix` tokens,
decode greedily, and count the sequences whose next `suffix` tokens come out exactly.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.infer import Sampling, generate
from lmforge.tokenizers import Tokenizer

CANARY_PREFIX = "my secret number is"


def make_secrets(n: int, digits: int = 6, seed: int = 0) -> list[str]:
    """`n` distinct random secrets, each ' d d d ...' (spaced so each digit is its own
    pre-token, and prefix + secret tokenizes as the two apart)."""
    if n > 10**digits:
        raise LmforgeError(f"there are only {10**digits} secrets of {digits} digits, not {n}")
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(f" {rng.randrange(10)}" for _ in range(digits)))
    return sorted(out)


def insert_canaries(
    texts: list[str], counts: dict[str, int], prefix: str = CANARY_PREFIX, seed: int = 0
) -> list[str]:
    """`texts` with each secret of `counts` put in `counts[secret]` times as a line
    `prefix + secret` of its own, between two lines of a text drawn at random."""
    rng = random.Random(seed)
    lines = [t.split("\n") for t in texts]
    weights = [len(ls) for ls in lines]  # longer texts get more canaries, as uniform lines would
    for secret, n in counts.items():
        for _ in range(n):
            doc = rng.choices(range(len(lines)), weights)[0]
            lines[doc].insert(rng.randrange(len(lines[doc]) + 1), prefix + secret)
    return ["\n".join(ls) for ls in lines]


@torch.no_grad()
def log_perplexities(
    model: nn.Module, tokenizer: Tokenizer, prefix: str, secrets: list[str], batch_size: int = 256
) -> torch.Tensor:
    """-log p(secret | prefix) in nats, summed over each secret's tokens, for a decoder."""
    head = tokenizer.encode(prefix, add_special_tokens=False)
    rows = [tokenizer.encode(s, add_special_tokens=False) for s in secrets]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        width = len(head) + max(len(r) for r in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        targets = torch.full((len(part), width), -100)
        for j, r in enumerate(part):
            ids[j, : len(head) + len(r)] = torch.tensor(head + r)
            targets[j, len(head) - 1 : len(head) + len(r) - 1] = torch.tensor(r)
        # right padding: causal attention keeps it from reaching the scored positions
        logits = model(ids.to(device)).float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets.to(device), reduction="none")
        out.append(nll.sum(1).cpu())
    return torch.cat(out)


def exposure(
    model: nn.Module,
    tokenizer: Tokenizer,
    secret: str,
    prefix: str = CANARY_PREFIX,
    samples: int = 2000,
    seed: int = 0,
    return_scores: bool = False,
) -> dict:
    """The estimated exposure of `secret` (a make_secrets string) and how it was reached;
    with `return_scores`, also the alternatives' log-perplexities (a tensor, under
    "alternative_log_perplexities"), the distribution the secret is ranked in."""
    digits = len(secret.split())
    alternatives = [s for s in make_secrets(samples + 1, digits, seed + 1) if s != secret]
    alternatives = alternatives[:samples]
    scores = log_perplexities(model, tokenizer, prefix, [secret, *alternatives])
    better = int((scores[1:] < scores[0]).sum())
    space_bits = digits * math.log2(10)
    rank_fraction = (1 + better) / (len(alternatives) + 1)
    mu, sigma = float(scores[1:].double().mean()), float(scores[1:].double().std())
    z = (float(scores[0]) - mu) / max(sigma, 1e-12)
    # a rank compares like with like only if every candidate is as many tokens: a tokenizer
    # trained on the canaried text merges the digits the secrets use, which shortens them
    lengths = [len(tokenizer.encode(s, add_special_tokens=False)) for s in [secret, *alternatives]]
    out = {
        "secret": secret,
        "secret_tokens": lengths[0],
        "alternative_tokens": [min(lengths[1:]), max(lengths[1:])],
        "log_perplexity": float(scores[0]),
        "better_alternatives": better,
        "samples": len(alternatives),
        "exposure": -math.log2(rank_fraction),  # = log2|R| - log2(|R| * rank_fraction)
        "max_measurable": math.log2(len(alternatives) + 1),
        "exposure_extrapolated": min(space_bits, -log2_normal_cdf(z)),
        "space_bits": space_bits,
    }
    if return_scores:
        out["alternative_log_perplexities"] = scores[1:]
    return out


def log2_normal_cdf(z: float) -> float:
    """log2 Phi(z), accurate far into the lower tail (where Phi underflows)."""
    if z > -30:
        return math.log2(0.5 * math.erfc(-z / math.sqrt(2)))
    # Mills ratio: Phi(z) ~ phi(z) / |z| (1 - 1/z^2) for z -> -inf
    return (-z * z / 2 - math.log(-z * math.sqrt(2 * math.pi)) + math.log1p(-1 / z**2)) / math.log(
        2
    )


@torch.no_grad()
def verbatim_extraction(
    model: nn.Module, sequences: list[list[int]], prefix: int = 50, suffix: int = 50
) -> dict:
    """The share of `sequences` (each at least prefix + suffix tokens) whose greedy
    continuation of the first `prefix` tokens reproduces the next `suffix` exactly, and the
    mean number of leading tokens reproduced."""
    usable = [s for s in sequences if len(s) >= prefix + suffix]
    if not usable:
        return {"sequences": 0, "extracted": 0.0, "mean_matched_tokens": 0.0}
    gens = generate(model, [s[:prefix] for s in usable], suffix, Sampling(temperature=0.0))
    matched = []
    for s, g in zip(usable, gens, strict=True):
        want, got = s[prefix : prefix + suffix], list(g.ids)[:suffix]
        n = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(got), suffix))
        matched.append(n)
    return {
        "sequences": len(usable),
        "prefix_tokens": prefix,
        "suffix_tokens": suffix,
        "extracted": sum(m == suffix for m in matched) / len(usable),
        "mean_matched_tokens": sum(matched) / len(usable),
    }
