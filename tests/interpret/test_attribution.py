"""Integrated gradients and gradient x input against captum, run on transformers' copy of the
same weights (its `inputs_embeds`), so the reference shares neither our quadrature nor our
forward pass; and completeness, the axiom that tells a right integral from a wrong one."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.interpret.attribution import (
    attribute,
    class_pick,
    next_token_pick,
    quadrature,
)
from lmforge.models import from_pretrained
from tests.models.test_hf import HF_MODELS, VOCAB, perturb

transformers = pytest.importorskip("transformers")
captum_attr = pytest.importorskip("captum.attr")

REL = 1e-4  # two fp32 evaluations differ by reordered sums, ~1e-6 of the largest value


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach(), want.detach()
    return float((got - want).abs().max() / want.abs().max())


def gpt2_pair(tmp_path):
    hf = HF_MODELS["gpt2"]().eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    return hf, from_pretrained(tmp_path).eval()


def bert_classifier_pair(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=6,
        intermediate_size=100,
        max_position_embeddings=40,
        num_labels=3,
    )
    hf = transformers.BertForSequenceClassification(cfg).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    return hf, from_pretrained(tmp_path).eval()


def ids(t=9):
    torch.manual_seed(3)
    return torch.randint(3, VOCAB, (1, t))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_equal_captum_on_an_lm(method, tmp_path):
    hf, ours = gpt2_pair(tmp_path)
    x = ids()
    token = 17

    def theirs(embeds):
        return hf(inputs_embeds=embeds).logits[:, -1, token]

    embeds = hf.transformer.wte(x).detach()
    baseline = hf.transformer.wte(torch.tensor([[0]])).detach().expand_as(embeds)
    want, delta = captum_attr.IntegratedGradients(theirs).attribute(
        embeds, baselines=baseline, n_steps=20, method=method, return_convergence_delta=True
    )
    pick = next_token_pick(token)
    got = attribute(ours, x, pick, baseline=0, steps=20, quadrature_method=method)
    assert got.attributions.shape == want[0].shape
    assert got.scores.shape == (x.size(1),)
    if method == "riemann_trapezoid":
        # captum's trapezoid weighs its n nodes (spaced 1/(n-1)) by 1/n, halved at the ends:
        # weights summing to (n-1)/n, not 1. Ours is the textbook rule; the two differ by
        # exactly that factor, which this checks (and completeness below shows ours right).
        assert rel_error(got.attributions * 19 / 20, want[0]) < REL
        return
    assert rel_error(got.attributions, want[0]) < REL
    # the same quadrature has the same completeness error, as captum's convergence delta
    spread = abs(got.target - got.baseline)
    assert abs(got.completeness_error - float(delta)) < REL * spread


def test_integrated_gradients_equal_captum_on_a_classifier(tmp_path):
    hf, ours = bert_classifier_pair(tmp_path)
    x = ids(7)
    mask = torch.ones_like(x)
    types = torch.zeros_like(x)

    def theirs(embeds):
        n = embeds.size(0)
        return hf(inputs_embeds=embeds, attention_mask=mask.expand(n, -1)).logits[:, 2]

    embeds = hf.bert.embeddings.word_embeddings(x).detach()
    want = captum_attr.IntegratedGradients(theirs).attribute(embeds, n_steps=24)
    got = attribute(ours, x, class_pick(2), steps=24, attention_mask=mask, token_type_ids=types)
    assert rel_error(got.attributions, want[0]) < REL
    grads = captum_attr.InputXGradient(theirs).attribute(embeds)
    gxi = attribute(
        ours, x, class_pick(2), "gradient-x-input", attention_mask=mask, token_type_ids=types
    )
    assert rel_error(gxi.attributions, grads[0]) < REL


def test_completeness(tmp_path):
    _, ours = gpt2_pair(tmp_path)
    x = ids()
    pick = next_token_pick(5)
    fine = attribute(ours, x, pick, steps=64)
    spread = fine.target - fine.baseline
    with torch.no_grad():
        assert fine.target == pytest.approx(float(ours(x)[0, -1, 5]), rel=1e-5)
    assert abs(spread) > 0.1  # a non-trivial difference to explain
    # sum of attributions = F(x) - F(baseline), up to the quadrature's error, reported
    assert float(fine.scores.sum()) == pytest.approx(spread + fine.completeness_error, abs=1e-5)
    assert abs(fine.completeness_error) < 1e-3 * abs(spread)
    coarse = attribute(ours, x, pick, steps=2, quadrature_method="riemann_trapezoid")
    assert abs(coarse.completeness_error) > abs(fine.completeness_error)
    trapezoid = attribute(ours, x, pick, steps=64, quadrature_method="riemann_trapezoid")
    assert abs(trapezoid.completeness_error) < 1e-2 * abs(spread)


def test_quadrature_and_bad_input(tmp_path):
    for method in ("gausslegendre", "riemann_trapezoid"):
        alphas, weights = quadrature(7, method)
        assert float(weights.sum()) == pytest.approx(1.0)
        assert float((weights * alphas**2).sum()) == pytest.approx(1 / 3, rel=0.05)
    _, ours = gpt2_pair(tmp_path)
    with pytest.raises(LmforgeError, match="at least 2 steps"):
        attribute(ours, ids(), next_token_pick(1), steps=1)
    with pytest.raises(LmforgeError, match="unknown attribution method"):
        attribute(ours, ids(), next_token_pick(1), method="saliency")
    with pytest.raises(LmforgeError, match="one sequence"):
        attribute(ours, ids().expand(2, -1), next_token_pick(1))
