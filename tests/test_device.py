"""The precision policy on every kind of machine, with the hardware detection stubbed: what
`precision: auto` picks for training and for inference on AMX, AVX-512 BF16, AVX-512 without
BF16, AVX2-only and unknown CPUs, and on CUDA GPUs with and without bf16. Then the bf16 paths
themselves run here whatever this CPU is (slowly where its bf16 is emulated)."""

import json

import pytest
import torch

import lmforge.device
from lmforge.device import autocast, fast_bf16, resolve_precision
from lmforge.infer import precision as inference
from lmforge.train.pretrain import pretrain

CPU, CUDA = torch.device("cpu"), torch.device("cuda")

# flags as /proc/cpuinfo lists them -> (training auto, inference auto for 1 row, for 4 rows)
CPUS = {
    "amx": ("avx2 avx512f avx512_bf16 amx_tile amx_int8 amx_bf16", "bf16", "bf16", "bf16"),
    "avx512-bf16": ("avx2 avx512f avx512bw avx512_vnni avx512_bf16", "bf16", "bf16", "bf16"),
    "avx512": ("avx2 avx512f avx512bw avx512_vnni", "fp32", "mixed", "fp32"),
    "avx2": ("sse4_2 avx fma avx2", "fp32", "mixed", "fp32"),
    "unknown": ("", "fp32", "mixed", "fp32"),
}


@pytest.mark.parametrize("kind", list(CPUS))
def test_auto_on_each_cpu_kind(kind, monkeypatch):
    flags, train, one_row, batch = CPUS[kind]
    monkeypatch.setattr(lmforge.device, "cpu_flags", lambda: frozenset(flags.split()))
    assert lmforge.device.cpu_has_fast_bf16() == (train == "bf16")
    assert resolve_precision("auto", CPU) == train
    assert inference.resolve("auto", CPU, rows=1) == one_row
    assert inference.resolve("auto", CPU, rows=4) == batch
    for concrete in ("fp32", "bf16"):  # a precision that is asked for is kept
        assert resolve_precision(concrete, CPU) == concrete
        assert inference.resolve(concrete, CPU, rows=4) == concrete


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_with_and_without_bf16(bf16, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(lmforge.device, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert resolve_precision("auto", CUDA) == expected
    # a GPU never takes the CPU's mixed compromise: bf16 where it is fast, else fp32
    assert inference.resolve("auto", CUDA, rows=1) == expected
    assert inference.resolve("auto", CUDA, rows=8) == expected


def test_other_devices_and_flag_parsing():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert fast_bf16({"avx512_bf16"}) and fast_bf16(frozenset({"amx_bf16"}))
    assert not fast_bf16({"avx512f", "avx512bw", "avx2"})
    flags = lmforge.device.cpu_flags()
    assert isinstance(flags, frozenset)  # empty where the OS does not list them


def test_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights():
    layer = torch.nn.Linear(8, 4)
    with autocast(CPU, "bf16"):
        out = layer(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with autocast(CPU, "fp32"):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


@pytest.mark.parametrize("fast", [True, False], ids=["fast-bf16-cpu", "avx2-cpu"])
def test_pretraining_with_auto_precision_takes_the_path_the_hardware_gets(
    fast, tiny_config, monkeypatch
):
    """`train.precision: auto` trains and evaluates in bf16 autocast where the (stubbed)
    CPU has fast bf16, and in fp32 where it has not; both train."""
    monkeypatch.setattr(lmforge.device, "cpu_has_fast_bf16", lambda: fast)
    seen = []
    original = torch.autocast.__init__

    def spy(self, device_type, dtype=None, *args, **kwargs):
        seen.append(dtype)
        original(self, device_type, dtype, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    config = tiny_config(**{"train.precision": "auto", "train.max_steps": 6})
    result = pretrain(config, progress=False, log=lambda _: None)
    assert result["precision"] == ("bf16" if fast else "fp32")
    assert (torch.bfloat16 in seen) == fast  # every step and evaluation under autocast
    losses = [
        json.loads(line)["loss"]
        for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "train"
    ]
    assert len(losses) == 6 and losses[-1] < losses[0]
