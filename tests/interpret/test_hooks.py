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


ZERO_OVERHEAD = r"""
import inspect, sys, torch
import lmforge.models, lmforge.nn
from lmforge.config import ModelConfig
from lmforge.models import Transformer

def code_path():
    # every class of the model code with the functions it runs: what a patch would change
    out = {}
    for name, module in sorted(sys.modules.items()):
        if name.startswith(("lmforge.models", "lmforge.nn")) and module is not None:
            for cls_name, cls in vars(module).items():
                if inspect.isclass(cls) and cls.__module__ == name:
                    out[f"{name}.{cls_name}"] = dict(vars(cls))
    return out

def hooks_of(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._forward_hooks_with_kwargs) for m in model.modules()
    )

def global_hooks():
    g = torch.nn.modules.module
    return len(g._global_forward_hooks) + len(g._global_forward_pre_hooks)

torch.manual_seed(0)
model = Transformer(ModelConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=8))
ids = torch.randint(0, 50, (1, 8))
before, forward = code_path(), Transformer.forward
with torch.no_grad():
    want = model(ids)
import lmforge.interpret as interpret
assert code_path() == before, "importing lmforge.interpret changed the model code"
assert hooks_of(model) == 0 and global_hooks() == 0
with torch.no_grad():
    _, cache = interpret.run_with_cache(model, ids)
    weights = interpret.patterns(model, ids)
    assert interpret.logit_lens(model, ids).shape[0] == 3
    got = model(ids)
assert len(cache) == 1 + 2 * 4 + 1 and weights["decoder"].shape[0] == 2
assert code_path() == before and Transformer.forward is forward, "interpret patched the model"
assert hooks_of(model) == 0 and global_hooks() == 0, "a hook was left behind"
assert torch.equal(got, want)
print("ok")
"""


def test_zero_overhead_when_unused():
    """lmforge.interpret never touches the model's code: importing it patches no class of
    lmforge.models or lmforge.nn, using it leaves no module or global hook, and the model's
    output afterwards is bit-identical (in a fresh interpreter, so the import is the first)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ZERO_OVERHEAD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
