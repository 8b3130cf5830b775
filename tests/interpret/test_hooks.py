"""The activation cache against transformers' own output_attentions and output_hidden_states
for converted models, and the promise that unused hooks cost nothing."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.interpret import hook_names, patterns, run_with_cache, run_with_hooks
from lmforge.models import save_pretrained
from tests.models.test_hf import AUTO_CLASS, inputs, small
from tests.numerics import assert_reordered_close, assert_same, model_lengths

transformers = pytest.importorskip("transformers")


def no_hooks_left(model) -> bool:
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


@pytest.mark.parametrize("family", ["gpt2", "bert", "bart"])
def test_unused_hooks_cost_nothing(family):
    model = small(family)
    _, ours = inputs(family)
    with torch.no_grad():
        before = model(**ours)
        out, cache = run_with_cache(model, **ours)
        after = model(**ours)
    assert_same(out, before)  # reading activations does not change the computation
    assert_same(after, before)
    assert no_hooks_left(model)
    assert set(cache) == {n for n in hook_names(model) if not n.endswith("_pattern")}


def test_a_replacing_hook_changes_the_output_and_is_removed():
    model = small("gpt2")
    _, ours = inputs("gpt2")
    with torch.no_grad():
        clean = model(**ours)
        zeroed = run_with_hooks(model, {"decoder.1.mlp_out": lambda t, n: t * 0}, **ours)
    assert not torch.allclose(zeroed, clean)
    assert no_hooks_left(model)
    with pytest.raises(LmforgeError, match="unknown hook point 'decoder.9.mlp_out'"):
        run_with_cache(model, **ours, names=["decoder.9.mlp_out"])
    with pytest.raises(LmforgeError, match="read but not replaced"):
        run_with_hooks(model, {"decoder.0.attn_pattern": lambda t, n: t}, **ours)
    assert no_hooks_left(model)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "bart"])
def test_cache_equals_transformers_attentions_and_hidden_states(family, tmp_path):
    model = small(family)
    save_pretrained(model, tmp_path)
    hf = getattr(transformers, AUTO_CLASS[family]).from_pretrained(
        tmp_path, attn_implementation="eager"
    )
    theirs, ours = inputs(family)
    with torch.no_grad():
        ref = hf.eval()(**theirs, output_attentions=True, output_hidden_states=True)
        weights = patterns(model, **ours)
        _, cache = run_with_cache(model, **ours)
    lengths = model_lengths(model, 7 if family == "bart" else 11, source=11)
    mask = ours["attention_mask"]
    real = mask[:, None, None, :].bool()  # compare keys that are tokens; padding weighs 0
    if family == "bart":
        groups = {
            "encoder": (ref.encoder_attentions, ref.encoder_hidden_states, "encoder"),
            "decoder": (ref.decoder_attentions, ref.decoder_hidden_states, "decoder"),
            "cross": (ref.cross_attentions, None, None),
        }
    else:
        stack = "encoder" if family == "bert" else "decoder"
        groups = {stack: (ref.attentions, ref.hidden_states, stack)}
    for key, (attentions, hidden, stack) in groups.items():
        assert weights[key].shape[0] == len(attentions)
        for got, want in zip(weights[key], attentions, strict=True):
            keys = real if key != "decoder" or family != "bart" else True
            # probabilities: the terms summed are at most 1
            assert_reordered_close(got * keys, want * keys, lengths, scale=1.0)
        if hidden is None:
            continue
        n = len(hidden) - 1
        ours_h = [cache[f"{stack}.0.resid_pre"]]
        ours_h += [cache[f"{stack}.{i}.resid_post"] for i in range(n - 1)]
        last = f"{stack}.final_norm"
        ours_h.append(cache[last] if last in cache else cache[f"{stack}.{n - 1}.resid_post"])
        for got, want in zip(ours_h, hidden, strict=True):
            assert_reordered_close(got, want, lengths)
