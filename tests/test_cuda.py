"""On a CUDA GPU (skipped elsewhere; `scripts/gpu_check.sh` runs them): the engine's parity
checks again on the GPU's kernels, and training in the precision `auto` picks there."""

import json

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.infer import Sampling, generate
from lmforge.infer.generate import StaticCache
from lmforge.models import Transformer
from lmforge.train.pretrain import pretrain
from tests.numerics import assert_reordered_close, model_lengths

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def sharp_model(**extra) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=64, **extra)
    model = Transformer(config).eval()
    with torch.no_grad():  # sharper distributions than the init: no near-ties in greedy ids
        for p in model.parameters():
            p.mul_(3.0)
    return model


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """fp32 means fp32: no TF32 (10-bit mantissa) in the comparisons below."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("family", [{}, {"positions": "rope", "norm": "rmsnorm", "n_kv_head": 2}])
def test_gpu_logits_equal_cpu_logits_and_the_cache_equals_the_full_forward(family):
    model = sharp_model(**family)
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = model(ids)
        gpu_model = model.to(CUDA)
        full = gpu_model(ids.to(CUDA))
        cache = StaticCache(20)
        steps = [gpu_model(ids[:, :6].to(CUDA), cache=cache)]
        steps += [gpu_model(ids[:, i : i + 1].to(CUDA), cache=cache) for i in range(6, 20)]
    lengths = model_lengths(model, 20)
    assert_reordered_close(full.cpu(), cpu, lengths)
    assert_reordered_close(torch.cat(steps, 1).cpu(), cpu, lengths)


def test_greedy_decoding_on_the_gpu_gives_the_cpus_ids():
    model = sharp_model()
    prompts = [[5, 17, 3], [40, 2, 9, 11]]
    cpu = [g.ids for g in generate(model, prompts, 16, Sampling(temperature=0))]
    gpu = [g.ids for g in generate(model.to(CUDA), prompts, 16, Sampling(temperature=0))]
    assert gpu == cpu


def test_pretraining_on_the_gpu_in_auto_precision(tiny_config):
    config = tiny_config(**{"train.device": "cuda", "train.precision": "auto"})
    result = pretrain(config, progress=False, log=lambda _: None)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert result["precision"] == expected and result["device"].startswith("cuda")
    rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    losses = [r["loss"] for r in rows if r["event"] == "train"]
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.2
