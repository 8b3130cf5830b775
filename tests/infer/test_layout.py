"""Decode-friendly weight layouts compute the same function as nn.Linear."""

import copy

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.infer.layout import TransposedLinear, WeightFirstLinear, transpose_linears
from lmforge.models import Transformer
from tests.numerics import assert_reordered_close, model_lengths

CONFIG = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32)


def test_each_layout_equals_the_linear_it_replaces():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = nn.Linear(48, 24, bias=bias)
        for x in (torch.randn(3, 5, 48), torch.randn(2, 48)):  # 15 rows; 2 take x W^T
            for layout in (TransposedLinear, WeightFirstLinear):
                got = layout(linear)(x)
                assert got.shape == (*x.shape[:-1], 24)
                assert_reordered_close(got, linear(x), [48], scale=linear(x).abs().max() + 1)


def test_a_model_keeps_its_function_and_its_tied_head():
    torch.manual_seed(1)
    model = Transformer(CONFIG).eval()
    reference = copy.deepcopy(model)
    transpose_linears(model)
    blocks = [m for m in model.modules() if isinstance(m, TransposedLinear)]
    assert len(blocks) == 6 * CONFIG.n_layer  # q, k, v, out, up, down of every block
    assert not any(type(m) is nn.Linear for m in model.modules())
    head = model.head.out
    assert isinstance(head, WeightFirstLinear)
    assert head.weight is model.tok_embed.weight  # still tied: no copy
    ids = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        want = reference(ids)
        got = model(ids)
    assert_reordered_close(got, want, model_lengths(CONFIG, 20))


def test_bf16_weights_are_left_as_they_are():
    model = Transformer(CONFIG).to(torch.bfloat16)
    transpose_linears(model)
    assert not any(isinstance(m, (TransposedLinear, WeightFirstLinear)) for m in model.modules())
