"""Sampling filters against Hugging Face's logits processors, the independent reference."""

from collections import Counter

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.infer.sampling import Sampling
from tests.numerics import assert_reordered_close

lp = pytest.importorskip("transformers.generation.logits_process")


def hf_filtered(logits, history, s: Sampling):
    """The processors transformers' generate() builds for these settings, in its order."""
    chain = []
    if s.repetition_penalty != 1:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(s.repetition_penalty))
    if s.temperature != 1:
        chain.append(lp.TemperatureLogitsWarper(s.temperature))
    if s.top_k:
        chain.append(lp.TopKLogitsWarper(s.top_k))
    if s.top_p < 1:
        chain.append(lp.TopPLogitsWarper(s.top_p))
    if s.min_p:
        chain.append(lp.MinPLogitsWarper(s.min_p))
    return lp.LogitsProcessorList(chain)(history, logits.clone())


SETTINGS = [
    Sampling(temperature=0.7),
    Sampling(top_k=5),
    Sampling(top_p=0.8),
    Sampling(min_p=0.1),
    Sampling(temperature=1.3, top_k=20, top_p=0.9, min_p=0.05),
    Sampling(repetition_penalty=1.3, top_p=0.95),
    Sampling(temperature=0.5, repetition_penalty=0.8, top_k=3),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=repr)
def test_filtered_logits_equal_transformers(settings):
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    history = torch.randint(0, 50, (4, 12))
    ours = settings.filter(logits, history)
    ref = hf_filtered(logits, history, settings)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    kept = ~torch.isinf(ref)
    # elementwise: a penalty and a temperature, one rounding each
    assert_reordered_close(ours[kept], ref[kept], [1, 1])


def test_frequency_and_presence_penalties_subtract_per_use():
    logits = torch.zeros(1, 6)
    history = torch.tensor([[2, 2, 5, 2, -1]])  # -1: padding, not a token
    out = Sampling(frequency_penalty=0.5, presence_penalty=0.25).penalize(logits, history)
    counts = Counter([2, 2, 5, 2])
    expected = [-(0.5 * counts[i] + 0.25 * (counts[i] > 0)) for i in range(6)]
    assert out[0].tolist() == pytest.approx(expected)


def test_draws_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    s = Sampling(temperature=0.9, top_p=0.9)
    probs = s.filter(logits).softmax(-1)[0]
    gen = torch.Generator().manual_seed(0)
    n = 4000
    draws = Counter(int(s.choose(logits, generator=gen)) for _ in range(n))
    for token in range(6):
        assert draws[token] / n == pytest.approx(float(probs[token]), abs=0.03)
    assert draws[5] == 0 and probs[5] == 0  # outside the nucleus


def test_greedy_takes_the_penalized_arg_max():
    logits = torch.tensor([[3.0, 2.9, -1.0]])
    assert Sampling(temperature=0).choose(logits).tolist() == [0]
    history = torch.tensor([[0]])
    assert Sampling(temperature=0, repetition_penalty=1.5).choose(logits, history).tolist() == [1]


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_k=-2), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=2), "min_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
    ],
)
def test_impossible_settings_are_refused(bad, message):
    with pytest.raises(LmforgeError, match=message):
        Sampling(**bad)
