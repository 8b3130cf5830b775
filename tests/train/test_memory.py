"""The memory estimate against what torch actually holds: parameter, gradient and optimizer
tensors byte for byte; activations against the tensors autograd saves for the backward pass
and against the peak the allocator sees."""

import json
import tempfile
from pathlib import Path

import pytest
import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.device import autocast
from lmforge.models import Transformer
from lmforge.train.losses import causal_lm_loss
from lmforge.train.memory import estimate_memory
from lmforge.train.optim import build_optimizer
from lmforge.train.pretrain import pretrain

CPU = torch.device("cpu")


def tiny(**fields) -> Transformer:
    torch.manual_seed(0)
    fields = {"vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16} | fields
    return Transformer(ModelConfig(**fields)).train()


def batch(model, size=2):
    c = model.config
    return torch.randint(0, c.vocab_size, (size, c.block_size + 1), generator=torch.Generator())


def forward_backward(model, tokens, precision="fp32"):
    with autocast(CPU, precision):
        logits = model(tokens[:, :-1])
    causal_lm_loss(logits, tokens[:, 1:]).backward()


@pytest.mark.parametrize(
    "optimizer,momentum",
    [
        ("adamw", 0.0),
        ("adam", 0.0),
        ("adadelta", 0.0),
        ("rmsprop", 0.0),
        ("rmsprop", 0.9),
        ("sgd", 0.0),
        ("sgd", 0.9),
    ],
)
def test_parameter_gradient_and_optimizer_bytes_are_what_torch_allocates(optimizer, momentum):
    cfg = TrainConfig(optimizer=optimizer, momentum=momentum, batch_size=2)
    model = tiny(tie_embeddings=True)
    opt = build_optimizer(model, cfg, CPU)
    forward_backward(model, batch(model))
    opt.step()  # optimizer state is created on the first step

    # Counted by storage, so a tied weight is one tensor however many modules hold it.
    weights = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()
    }
    grads = {p.grad.untyped_storage().data_ptr(): p.grad.nbytes for p in model.parameters()}
    state = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for per_param in opt.state.values()
        for t in per_param.values()
        if torch.is_tensor(t)
    }
    estimate = estimate_memory(model, cfg, "fp32")
    assert estimate.parameters == sum(weights.values())
    assert estimate.gradients == sum(grads.values())
    assert estimate.optimizer == sum(state.values())


def saved_bytes(model, tokens, precision="fp32") -> int:
    """Bytes of the tensors autograd keeps for the backward pass, parameters left out, each
    storage counted once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward_backward(model, tokens, precision)
    return sum(saved.values())


LLAMA = {
    "positions": "rope",
    "norm": "rmsnorm",
    "mlp": "gated",
    "activation": "silu",
    "n_head": 4,
    "n_kv_head": 2,
    "bias": False,
    "tie_embeddings": False,
}


@pytest.mark.parametrize(
    "fields,precision",
    [
        ({}, "fp32"),
        ({"n_layer": 4, "block_size": 32}, "fp32"),
        (LLAMA, "fp32"),
        ({"attention": "explicit", "dropout": 0.1}, "fp32"),
        ({"dropout": 0.1, "norm_position": "post", "embedding_norm": True}, "fp32"),
        ({}, "bf16"),
        (LLAMA, "bf16"),
    ],
)
def test_activation_estimate_is_near_what_autograd_saves(fields, precision):
    model = tiny(**fields)
    measured = saved_bytes(model, batch(model, 4), precision)
    estimate = estimate_memory(model, TrainConfig(batch_size=4), precision).activations
    assert 0.75 <= estimate / measured <= 1.33, (estimate, measured)


def peak_bytes(model, tokens) -> int:
    """The highest CPU allocation total during a forward and backward pass, above the start,
    from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward_backward(model, tokens)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())["traceEvents"]
    events = [e["args"] for e in trace if e.get("name") == "[memory]"]
    base = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - base


def test_activation_checkpointing_lowers_the_peak_as_estimated():
    model = tiny(n_layer=6, n_embd=32, block_size=32, dropout=0.1)
    tokens = batch(model, 4)
    peaks, estimates = [], []
    for on in (False, True):
        model.checkpoint_activations(on)
        model.zero_grad(set_to_none=True)
        peaks.append(peak_bytes(model, tokens))
        e = estimate_memory(model, TrainConfig(batch_size=4, activation_checkpointing=on), "fp32")
        estimates.append(e.activations + e.gradients)  # gradients appear during backward
    assert peaks[1] < 0.5 * peaks[0]
    for peak, estimate in zip(peaks, estimates):
        assert 0.5 <= estimate / peak <= 2, (estimate, peak)


def test_pretrain_prints_the_estimate(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 2, "train.activation_checkpointing": True})
    lines = []
    pretrain(cfg, progress=False, log=lines.append)
    [line] = [ln for ln in lines if ln.startswith("memory (estimate):")]
    saved = json.loads((cfg.run_dir / "config.json").read_text())
    with torch.device("meta"):  # sizes only
        model = Transformer(ModelConfig(**saved["model"]))
    assert line == estimate_memory(model, cfg.train, "fp32").line("adamw", True)
    assert "activation checkpointing" in line
