"""Canary exposure and the extraction probe on a tiny model trained here for a few seconds:
a secret inserted many times is exposed, one never inserted is not; training text comes
out verbatim, random text does not."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.interpret.memorization import (
    CANARY_PREFIX,
    exposure,
    insert_canaries,
    log2_normal_cdf,
    log_perplexities,
    make_secrets,
    verbatim_extraction,
)
from lmforge.models import Transformer
from lmforge.tokenizers import Tokenizer
from tests.conftest import TINY_TEXT

SAMPLES = 400


@pytest.fixture(scope="module")
def trained():
    """A 2-layer character model trained ~250 steps on TINY_TEXT with one secret put in 30
    times; returns (model, tokenizer, inserted secret, never-inserted secret, token ids)."""
    inserted, never = make_secrets(2, digits=4, seed=3)
    text = insert_canaries([TINY_TEXT], {inserted: 30}, seed=1)[0]
    tok = Tokenizer.train([text + "0123456789"], "char")
    ids = torch.tensor(tok.encode(text, add_special_tokens=False))
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=64)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        starts = torch.randint(0, len(ids) - 65, (32,), generator=g)
        batch = torch.stack([ids[s : s + 65] for s in starts])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok, inserted, never, ids.tolist()


def test_secrets_and_insertion():
    secrets = make_secrets(5, digits=3, seed=2)
    assert len(set(secrets)) == 5 and all(len(s.split()) == 3 for s in secrets)
    out = insert_canaries(["a\nb\nc", "d\ne"], {secrets[0]: 4, secrets[1]: 1}, seed=0)
    joined = "\n".join(out)
    assert joined.count(CANARY_PREFIX + secrets[0]) == 4
    assert joined.count(CANARY_PREFIX + secrets[1]) == 1
    assert joined.replace(CANARY_PREFIX + secrets[0] + "\n", "").count("\n") >= 3  # lines kept
    with pytest.raises(LmforgeError, match="only 100 secrets of 2 digits"):
        make_secrets(101, digits=2)


def test_log_perplexity_is_the_sum_of_the_secrets_token_losses(trained):
    model, tok, inserted, never, _ = trained
    got = log_perplexities(model, tok, CANARY_PREFIX, [inserted, never, " 1"], batch_size=2)
    for secret, value in zip([inserted, never, " 1"], got, strict=True):
        head = tok.encode(CANARY_PREFIX, add_special_tokens=False)
        tail = tok.encode(secret, add_special_tokens=False)
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = model(ids)[0].log_softmax(-1)
        want = -sum(float(logp[len(head) - 1 + i, t]) for i, t in enumerate(tail))
        assert float(value) == pytest.approx(want, rel=1e-4)


def test_an_inserted_canary_is_exposed_and_a_never_inserted_one_is_not(trained):
    model, tok, inserted, never, _ = trained
    hit = exposure(model, tok, inserted, samples=SAMPLES)
    miss = exposure(model, tok, never, samples=SAMPLES)
    cap = math.log2(SAMPLES + 1)
    assert hit["max_measurable"] == pytest.approx(cap)
    assert hit["space_bits"] == pytest.approx(4 * math.log2(10))
    assert hit["exposure"] > cap - 1  # ranks (near) first of 400
    assert miss["exposure"] < 5  # a random rank: 1 bit expected, > 5 bits has odds 1/32
    assert hit["exposure_extrapolated"] > hit["exposure"] - 1
    assert hit["log_perplexity"] < miss["log_perplexity"]
    # characters: every 4-digit candidate is 8 tokens (space, digit), so the rank is fair
    assert hit["secret_tokens"] == 8 and hit["alternative_tokens"] == [8, 8]


def test_normal_tail():
    assert log2_normal_cdf(0.0) == pytest.approx(-1.0)
    assert 2 ** log2_normal_cdf(-2.0) == pytest.approx(0.02275013, rel=1e-6)
    # both branches agree where they meet
    assert log2_normal_cdf(-29.999) == pytest.approx(log2_normal_cdf(-30.001), abs=0.2)


def test_verbatim_extraction_reproduces_training_text_not_random_text(trained):
    model, tok, _, _, ids = trained
    rng = random.Random(0)
    seen = [ids[s : s + 40] for s in (rng.randrange(len(ids) - 40) for _ in range(8))]
    chars = list(range(tok.vocab_size))
    unseen = [[rng.choice(chars) for _ in range(40)] for _ in range(8)]
    hit = verbatim_extraction(model, seen, prefix=24, suffix=16)
    miss = verbatim_extraction(model, unseen, prefix=24, suffix=16)
    assert hit["sequences"] == 8 and hit["suffix_tokens"] == 16
    assert hit["extracted"] >= 0.25 and hit["mean_matched_tokens"] > 8
    assert miss["extracted"] == 0.0 and miss["mean_matched_tokens"] < 4
    assert verbatim_extraction(model, [ids[:10]], prefix=24, suffix=16)["sequences"] == 0
