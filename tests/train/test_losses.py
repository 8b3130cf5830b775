"""Objectives, optimizers by name and LR schedules, against their definitions."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import TrainConfig
from lmforge.train.losses import IGNORE, mask_tokens, seq2seq_loss, span_loss
from lmforge.train.optim import OPTIMIZERS, build_optimizer, lr_at
from tests.numerics import assert_reordered_close


def test_masking_follows_berts_15_80_10_10_rule():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 500), generator=gen)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    inputs, labels = mask_tokens(ids, mask_id=4, vocab_size=1000, special=special, generator=gen)
    chosen = labels != IGNORE
    assert not chosen[special].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # only chosen tokens change
    assert chosen[~special].float().mean().item() == pytest.approx(0.15, abs=0.005)
    masked = (inputs[chosen] == 4).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)  # a random draw can repeat
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.01)  # random replacements


def test_label_smoothed_seq2seq_loss_matches_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3:] = IGNORE  # padding
    eps = 0.1
    logp = F.log_softmax(logits, -1)
    real = labels != IGNORE
    nll = -logp[real].gather(-1, labels[real][:, None]).squeeze(-1)
    uniform = -logp[real].mean(-1)
    expected = ((1 - eps) * nll + eps * uniform).mean()
    assert seq2seq_loss(logits, labels, label_smoothing=eps).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_span_loss_averages_start_and_end_and_skips_answers_outside():
    torch.manual_seed(1)
    start, end = torch.randn(3, 8), torch.randn(3, 8)
    s_pos, e_pos = torch.tensor([1, 4, 9]), torch.tensor([2, 6, 12])  # the third: cut off

    def nll(logits, i, pos):
        return -F.log_softmax(logits[i], -1)[pos]

    expected = 0.5 * (
        (nll(start, 0, 1) + nll(start, 1, 4)) / 2 + (nll(end, 0, 2) + nll(end, 1, 6)) / 2
    )
    assert span_loss(start, end, s_pos, e_pos).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_by_name_steps_as_torch_does(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin.load_state_dict(model.state_dict())
    lr = 1.0 if name == "adadelta" else 0.01
    cfg = TrainConfig(optimizer=name, learning_rate=lr, weight_decay=0.1, momentum=0.5)
    ours = build_optimizer(model, cfg, torch.device("cpu"))
    options = {"betas": (0.9, 0.99)} if name in {"adam", "adamw"} else {}
    if name in {"sgd", "rmsprop"}:
        options["momentum"] = 0.5
    ref = OPTIMIZERS[name](
        [
            {"params": [twin[0].weight], "weight_decay": 0.1},
            {"params": [twin[0].bias, *twin[1].parameters()], "weight_decay": 0.0},
        ],
        lr=lr,
        foreach=False,
        **options,
    )
    x = torch.randn(16, 4)
    for _ in range(3):
        for m, opt in ((model, ours), (twin, ref)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    # torch's own update in another kernel (foreach or not): a handful of elementwise
    # roundings per parameter and step (moments, square root, division, decay), 3 steps
    for p, q in zip(model.parameters(), twin.parameters()):
        assert_reordered_close(p, q, [8] * 3)


def test_noam_is_the_papers_schedule():
    d_model, warmup = 512, 4000
    cfg = TrainConfig(
        schedule="noam", learning_rate=(d_model * warmup) ** -0.5, warmup_steps=warmup
    )
    for step in [0, 10, 3998, 3999, 4000, 10_000, 100_000]:
        n = step + 1  # the paper counts from 1
        paper = d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)
        assert lr_at(step, cfg) == pytest.approx(paper, rel=1e-9)


def test_linear_and_constant_schedules():
    cfg = TrainConfig(
        schedule="linear", learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.0
    )
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(59, cfg) == pytest.approx(0.5, abs=0.01)
    assert lr_at(109, cfg) == pytest.approx(0.0)
    steps = [lr_at(s, cfg) for s in range(10, 110)]
    gaps = {round(a - b, 9) for a, b in zip(steps, steps[1:])}
    assert len(gaps) == 1  # a straight line
    const = cfg.model_copy(update={"schedule": "constant"})
    assert [lr_at(s, const) for s in (4, 10, 109)] == pytest.approx([0.5, 1.0, 1.0])
    assert math.isclose(lr_at(0, const), 0.1)
