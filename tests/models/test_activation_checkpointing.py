"""Activation checkpointing changes what is kept for the backward pass, not the gradients."""

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models import Transformer
from lmforge.train.losses import causal_lm_loss


def gradients(model, inputs, targets, checkpointing: bool):
    model.checkpoint_activations(checkpointing)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout draws in both passes
    saved = 0

    def pack(t):
        nonlocal saved
        saved += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = causal_lm_loss(model(**inputs), targets)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved


@pytest.mark.parametrize(
    "fields",
    [
        {"arch": "decoder", "dropout": 0.1},
        {"arch": "decoder", "positions": "rope", "norm": "rmsnorm", "mlp": "gated"},
        {"arch": "encoder-decoder", "dropout": 0.1, "norm_position": "post"},
    ],
)
def test_gradients_are_the_same_with_and_without_checkpointing(fields):
    torch.manual_seed(0)
    c = ModelConfig(vocab_size=30, block_size=12, n_layer=3, n_head=2, n_embd=16, **fields)
    model = Transformer(c).train()
    tokens = torch.randint(0, 30, (3, 12))
    inputs = {"input_ids": tokens}
    if c.arch == "encoder-decoder":
        inputs["decoder_input_ids"] = tokens.flip(1)
    loss, plain, saved_plain = gradients(model, inputs, tokens, checkpointing=False)
    loss_ckpt, ckpt, saved_ckpt = gradients(model, inputs, tokens, checkpointing=True)
    # Recomputing a block runs the same kernels on the same shapes and the same dropout
    # draws (the RNG state is replayed): the same numbers, bit for bit.
    assert loss_ckpt == loss
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert torch.equal(plain[name], ckpt[name]), name
    assert saved_ckpt < saved_plain / 2  # the blocks' tensors were not kept


def test_inference_ignores_checkpointing():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16))
    tokens = torch.randint(0, 30, (2, 12))
    with torch.no_grad():
        expected = model(tokens)
        model.checkpoint_activations()
        assert torch.equal(model(tokens), expected)
    model.eval()
    assert torch.equal(model(tokens), expected)  # with grad enabled, but not training
