"""Activation patching: a run patched with its own activations is unchanged, patching every
layer from the clean run gives the clean logits, and a sweep finds where a corruption lives."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.interpret import hook_names, run_with_cache
from lmforge.interpret.patching import logit_difference, patch, patching_sweep
from tests.models.test_hf import small
from tests.numerics import assert_same


def clean_and_corrupt(t=8, at=2):
    torch.manual_seed(5)
    clean = torch.randint(3, 1000, (1, t))
    corrupt = clean.clone()
    corrupt[0, at] = (clean[0, at] + 1) % 1000
    return clean, corrupt


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_patching_a_run_with_its_own_activations_changes_nothing(family):
    model = small(family)
    clean, _ = clean_and_corrupt()
    with torch.no_grad():
        want = model(clean)
        _, cache = run_with_cache(model, clean)
        every = {n: None for n in cache}
        assert_same(patch(model, clean, cache, every), want)
        assert_same(patch(model, clean, cache, {n: [1, 3] for n in cache}), want)


def test_patching_every_layer_from_the_clean_run_gives_the_clean_logits():
    model = small("gpt2")
    clean, corrupt = clean_and_corrupt()
    names = [n for n in hook_names(model) if n.endswith(("attn_out", "mlp_out"))]
    with torch.no_grad():
        want = model(clean)
        _, cache = run_with_cache(model, clean)
        assert not torch.allclose(model(corrupt), want)
        # the residual stream after every block
        posts = {n: None for n in cache if n.endswith("resid_post")}
        assert_same(patch(model, corrupt, cache, posts), want)
        # or the embeddings and every sub-layer's output: the stream is rebuilt term by term
        assert_same(patch(model, corrupt, cache, dict.fromkeys(["embed", *names])), want)
        # the sub-layers without the embeddings are not enough: the corrupted token stays
        assert not torch.allclose(patch(model, corrupt, cache, dict.fromkeys(names)), want)


def test_a_sweep_finds_the_corrupted_position():
    model = small("gpt2")
    at = 2
    clean, corrupt = clean_and_corrupt(at=at)
    metric = logit_difference(good=11, bad=12)
    out = patching_sweep(model, clean, corrupt, metric)
    effects, restored = out["effects"], out["restored"]
    assert effects.shape == (3, clean.size(1))
    with torch.no_grad():
        assert out["clean"] == pytest.approx(float(metric(model(clean))), abs=1e-6)
    assert out["clean"] != pytest.approx(out["corrupt"], abs=1e-4)
    # entering layer 0, only the corrupted token differs: patching it is the clean run,
    # patching any other position leaves the corrupted one
    assert float(effects[0, at]) == pytest.approx(out["clean"], abs=1e-5)
    others = [p for p in range(clean.size(1)) if p != at]
    assert torch.allclose(effects[0, others], torch.tensor(out["corrupt"]), atol=1e-5)
    # causal attention: positions before the corruption carry nothing of it at any layer
    assert torch.allclose(effects[:, :at], torch.tensor(out["corrupt"]), atol=1e-5)
    assert float(restored[0, at]) == pytest.approx(1.0, abs=1e-3)
    # the stream leaving the last block at the last position is all its logits depend on
    post = patching_sweep(model, clean, corrupt, metric, point="resid_post")
    assert float(post["restored"][-1, -1]) == pytest.approx(1.0, abs=1e-4)
    assert float(restored[-1, -1]) != pytest.approx(1.0, abs=1e-3)  # entering it is not


def test_bad_patching_input():
    model = small("gpt2")
    clean, corrupt = clean_and_corrupt()
    metric = logit_difference(1, 2)
    with pytest.raises(LmforgeError, match="same number of tokens"):
        patching_sweep(model, clean, corrupt[:, :-1], metric)
    with pytest.raises(LmforgeError, match="cannot patch 'attn_pattern'"):
        patching_sweep(model, clean, corrupt, metric, point="attn_pattern")
