"""The pieces of the training core: train_step, TrainState, ParallelPlan, typed results."""

import math

import pytest
import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.models import Transformer
from lmforge.train.distributed import ParallelPlan
from lmforge.train.job import PretrainResult
from lmforge.train.optim import build_optimizer
from lmforge.train.trainer import EarlyStopping, NonFiniteLoss, TrainState, lm_loss, train_step
from tests.numerics import assert_reordered_close

CPU = torch.device("cpu")


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16))


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 40, (4, 8), generator=g)
    return x, x.roll(-1, 1)


def test_train_step_is_the_textbook_step_with_accumulation():
    """Two micro-batches: the gradient of their mean loss, clipped, then AdamW."""
    cfg = TrainConfig(learning_rate=1e-2, grad_clip=0.5, weight_decay=0.0)
    ours, ref = tiny(), tiny()
    opt = build_optimizer(ours, cfg, CPU)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0, foreach=False)
    out = train_step(ours, opt, [batch(1), batch(2)], lr=1e-2, device=CPU, grad_clip=0.5)

    losses = [lm_loss(ref, batch(s)) for s in (1, 2)]
    (sum(losses) / 2).backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    ref_opt.step()
    assert out.loss == pytest.approx(sum(x.item() for x in losses) / 2, rel=1e-6)
    assert out.grad_norm == pytest.approx(norm.item(), rel=1e-5)
    for p, q in zip(ours.parameters(), ref.parameters()):
        # the same gradients; fused and single-tensor AdamW round their handful of
        # elementwise operations differently (tests/numerics.py)
        assert_reordered_close(p, q, [8])
        assert p.grad is None  # cleared for the next step
    assert all(g["lr"] == 1e-2 for g in opt.param_groups)


def test_a_non_finite_loss_stops_before_the_update():
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, TrainConfig(), CPU)

    def nan_loss(m, b):
        return lm_loss(m, b) * float("nan")

    with pytest.raises(NonFiniteLoss) as e:
        train_step(model, opt, [batch(0)], lr=1e-2, device=CPU, loss_fn=nan_loss)
    assert math.isnan(e.value.value)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_train_state_round_trips_with_its_monitor():
    monitor = EarlyStopping("accuracy", higher_is_better=True, patience=2)
    monitor.update(10, {"accuracy": 0.7})
    state = TrainState(step=10, elapsed=12.5, monitor=monitor)
    saved = {"step": 10, **state.state_dict()}
    again = TrainState(monitor=EarlyStopping("accuracy", higher_is_better=True, patience=2))
    again.load_state_dict(saved)
    assert (again.step, again.saved_step, again.elapsed) == (10, 10, 12.5)
    assert again.monitor == monitor
    assert "monitor" not in TrainState(step=3).state_dict()


def test_parallel_plan_is_resolved_once(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    plan = ParallelPlan.resolve("fsdp+tp")
    assert (plan.mode, plan.world, plan.dp, plan.tp, plan.rank, plan.dp_rank) == (
        "fsdp+tp",
        4,
        2,
        2,
        3,
        1,
    )
    assert plan.tokens_per_step(batch_size=4, grad_accum_steps=2, block_size=16) == 4 * 2 * 16 * 2
    assert plan.describe() == "; 4 processes, fsdp+tp on a 2 x 2 mesh (fsdp x tp)"
    ddp = ParallelPlan.resolve("none", log=lambda _: None)  # several processes: ddp
    assert (ddp.mode, ddp.dp, ddp.dp_rank) == ("ddp", 4, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    single = ParallelPlan.resolve("tp")
    assert single == ParallelPlan() and single.describe() == ""
    sampler = object()
    assert single.shard(sampler) is sampler


def test_typed_results_read_as_before():
    result = PretrainResult(
        steps=5,
        stopped_by_time_budget=False,
        stopped_early=False,
        best_eval=None,
        valid_loss_nats_per_token=1.5,
        valid_bits_per_byte=2.0,
        valid_tokens=100,
        parameters=10,
        device="cpu",
        precision="fp32",
        minutes=0.1,
        sample="ROMEO:",
    )
    assert result["steps"] == result.steps == 5 and dict(result)["sample"] == "ROMEO:"
    assert "sample" not in result.to_json() and result.to_json()["valid_tokens"] == 100
    with pytest.raises(KeyError):
        result["stopped_by_budget"]
