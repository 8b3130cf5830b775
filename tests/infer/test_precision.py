"""Inference precisions, the mixed one above all: the prompt through fp32 weights, the decode
steps through a bf16 copy, attending over the fp32 cache the prompt left."""

import copy

import pytest
import torch

import lmforge.device
from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.infer import Sampling, generate
from lmforge.infer import precision as P
from lmforge.models import Transformer
from tests.infer.model_dirs import char_model_dir
from tests.numerics import U16, assert_reordered_close, model_lengths

GREEDY = Sampling(temperature=0)
PROMPTS = [[5, 17, 3, 9, 25], [7, 1, 42]]


def model(**extra) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=61, block_size=24, n_layer=2, n_head=2, n_embd=32, **extra)
    m = Transformer(config).eval()
    with torch.no_grad():  # sharper distributions than the init: clearer choices
        for p in m.parameters():
            p.mul_(3.0)
    return m


def test_a_decode_copy_in_the_same_precision_changes_nothing():
    m = model()
    plain = generate(m, PROMPTS, 12, GREEDY, logprobs=True)
    twin = generate(m, PROMPTS, 12, GREEDY, logprobs=True, decode_model=copy.deepcopy(m))
    assert [g.ids for g in twin] == [g.ids for g in plain]
    assert [g.logprobs for g in twin] == [g.logprobs for g in plain]


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_mixed_prefills_in_fp32_and_decodes_like_the_fp32_model(arch):
    m = model(arch=arch)
    fp32, bf16 = P.inference_models(m, "mixed")
    assert bf16.tok_embed.weight.dtype == torch.bfloat16
    start = {"decoder_start_id": 2} if arch == "encoder-decoder" else {}
    calls = []
    bf16.head.register_forward_hook(lambda *_: calls.append(1))
    mixed = generate(fp32, PROMPTS, 10, GREEDY, logprobs=True, decode_model=bf16, **start)
    assert len(calls) == 9  # every decode step, and not the prefill, ran on the bf16 copy
    for row, g in enumerate(mixed):
        # Score what mixed chose with the fp32 model, without a cache: the first token
        # (prefill, fp32 weights) exactly, the rest to bf16's precision.
        if arch == "decoder":
            logits = fp32(torch.tensor([PROMPTS[row] + g.ids]))[0, len(PROMPTS[row]) - 1 : -1]
        else:
            target = torch.tensor([[2] + g.ids[:-1]])
            logits = fp32(torch.tensor([PROMPTS[row]]), decoder_input_ids=target)[0]
        expected = logits.log_softmax(-1).gather(1, torch.tensor(g.ids)[:, None])[:, 0]
        got, scale = torch.tensor(g.logprobs), logits.abs().max()
        # A log-probability is a logit less a log-sum over the vocabulary: twice the
        # logits' bound. The prefill: fp32 sums in another order (tests/numerics.py).
        seq = len(PROMPTS[row]) + len(g.ids)
        lengths = [*model_lengths(m, seq, source=len(PROMPTS[row])), m.config.vocab_size]
        assert_reordered_close(got[:1], expected[:1], lengths * 2, scale)
        # The decode steps: each matmul multiplies bf16-rounded inputs by bf16-rounded
        # weights (relative error 2u each, u = 2^-8) and accumulates in fp32; a decoder
        # block has 4 matmuls on the path (q/k/v, output, MLP in, MLP out; 5 more with
        # cross-attention), then the head. The errors add along the chain.
        per_block = 9 if arch == "encoder-decoder" else 4
        matmuls = per_block * m.config.decoder_layers + 1
        assert_reordered_close(got, expected, [1] * matmuls * 2 * 2, scale, u=U16)


def test_mixed_beam_search_runs_on_the_bf16_copy():
    fp32, bf16 = P.inference_models(model(), "mixed")
    mixed = generate(fp32, PROMPTS, 6, num_beams=3, decode_model=bf16)
    plain = generate(fp32, PROMPTS, 6, num_beams=3)
    assert [len(g.ids) for g in mixed] == [6, 6]
    # near-ties may part the beams; the best sequence of a sharp model stays
    assert sum(a.ids == b.ids for a, b in zip(mixed, plain)) >= 1
    assert [a.score for a in mixed] != [b.score for b in plain]  # bf16 did decode


def test_auto_picks_by_hardware_and_rows(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(lmforge.device, "cpu_has_fast_bf16", lambda: False)
    assert P.resolve("auto", cpu, rows=1) == "mixed"
    assert P.resolve("auto", cpu, rows=4) == "fp32"
    assert P.resolve("int8", cpu) == "int8"
    assert P.resolve("auto", torch.device("mps")) == "fp32"
    monkeypatch.setattr(lmforge.device, "cpu_has_fast_bf16", lambda: True)
    assert P.resolve("auto", cpu, rows=4) == "bf16"
    with pytest.raises(ValueError, match="choose one of"):
        P.inference_models(model(), "fp8")


@pytest.mark.parametrize("precision", ["mixed", "bf16", "int8"])
def test_generate_command_takes_a_precision(tmp_path, capsys, precision):
    char_model_dir(tmp_path, ["to be or not to be, that is the question"])
    args = ["generate", str(tmp_path), "--prompt", "to be", "--max-new-tokens", "6"]
    assert main([*args, "--temperature", "0", "--precision", precision]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out.strip()) > len("to be")
