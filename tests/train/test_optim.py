import math

import pytest
import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.models import GPT
from lmforge.train import build_optimizer, lr_at, param_groups
from tests.numerics import assert_reordered_close


def test_weight_decay_only_on_linear_matrices():
    model = GPT(ModelConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}  # tied head appears once
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decayed == sorted(
        f"decoder.blocks.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.up", "mlp.down")
    )
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(model.parameters()))
    assert any(p is model.tok_embed.weight for p in no_decay["params"])


def test_decoupled_decay_matches_torch_adamw_formula():
    """One step with zero gradient: AdamW shrinks decayed weights by lr*wd, nothing else moves."""
    model = GPT(ModelConfig(vocab_size=20, block_size=4, n_layer=1, n_head=1, n_embd=8))
    cfg = TrainConfig(learning_rate=0.1, weight_decay=0.5)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = (
            1 - 0.1 * 0.5
            if n.endswith(
                ("q.weight", "k.weight", "v.weight", "out.weight", "up.weight", "down.weight")
            )
            else 1
        )
        # zero gradients: Adam's update is exactly 0, and decay is one multiplication
        assert_reordered_close(p.detach(), before[n] * factor, [1])


def test_warmup_then_cosine():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    mid = 10 + (110 - 1 - 10) / 2
    assert lr_at(int(mid), cfg) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=0.02
    )
    assert lr_at(109, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
