"""The logit lens: its last layer is the model's own logits bit for bit, every layer equals
transformers' hidden states sent through its own final norm and head, and the per-layer loss
is the cross-entropy of each reading."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.interpret import lens_losses, logit_lens
from lmforge.interpret.lens import top_tokens
from lmforge.models import save_pretrained
from tests.models.test_hf import inputs, small
from tests.numerics import assert_reordered_close, assert_same, model_lengths

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "bart"])
def test_last_layer_is_the_models_logits_exactly(family):
    model = small(family)
    _, ours = inputs(family)
    with torch.no_grad():
        logits = model(**ours)
    ids = ours.pop("input_ids")
    lens = logit_lens(model, ids, **ours)
    layers = model.config.decoder_layers if family == "bart" else model.config.n_layer
    assert lens.shape == (layers + 1, *logits.shape)
    assert_same(lens[-1], logits)
    assert not torch.allclose(lens[0], logits)  # the first reading is not the answer


def test_every_layer_equals_transformers_hidden_states_through_its_head(tmp_path):
    model = small("gpt2")
    save_pretrained(model, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    theirs, ours = inputs("gpt2")
    with torch.no_grad():
        hidden = hf(**theirs, output_hidden_states=True).hidden_states
        # transformers' last hidden state has ln_f applied already; the others do not
        want = [hf.lm_head(hf.transformer.ln_f(h)) for h in hidden[:-1]]
        want.append(hf.lm_head(hidden[-1]))
    lens = logit_lens(model, ours["input_ids"], attention_mask=ours["attention_mask"])
    real = ours["attention_mask"].bool()  # padded positions are not compared
    for got, ref in zip(lens, want, strict=True):
        assert_reordered_close(got[real], ref[real], model_lengths(model, 11))


def test_per_layer_loss_is_each_readings_cross_entropy():
    model = small("gpt2")
    torch.manual_seed(4)
    ids = torch.randint(3, 1000, (2, 12))
    targets = ids[:, 1:].clone()
    targets[1, -3:] = -100  # left out
    lens = logit_lens(model, ids[:, :-1])
    losses = lens_losses(lens, targets)
    assert losses.shape == (lens.size(0),)
    for layer in (0, lens.size(0) - 1):
        keep = targets != -100
        want = F.cross_entropy(lens[layer][keep], targets[keep])
        assert float(losses[layer]) == pytest.approx(float(want), rel=1e-6)
    with torch.no_grad():
        model_loss = F.cross_entropy(model(ids[:, :-1])[targets != -100], targets[targets != -100])
    assert float(losses[-1]) == pytest.approx(float(model_loss), rel=1e-6)
    probs, top = top_tokens(lens, k=3)
    assert top.shape == (lens.size(0), 11, 3)
    assert torch.equal(top[-1, :, 0], lens[-1, 0].argmax(-1))
    assert bool((probs[..., 0] >= probs[..., 1]).all())
