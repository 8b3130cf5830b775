import tempfile

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models import GPT, from_pretrained, save_pretrained, save_weights
from tests.numerics import assert_reordered_close, assert_same, model_lengths

transformers = pytest.importorskip("transformers")

CFG = ModelConfig(vocab_size=101, block_size=24, n_layer=3, n_head=6, n_embd=48)


def to_hf_gpt2(model: GPT):
    """The same model in transformers' GPT2LMHeadModel, through our Hugging Face export."""
    with tempfile.TemporaryDirectory() as directory:
        save_pretrained(model, directory, "gpt2")
        return transformers.GPT2LMHeadModel.from_pretrained(directory).eval()


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_logits_equal_transformers_gpt2(attention):
    torch.manual_seed(0)
    model = GPT(CFG.model_copy(update={"attention": attention})).eval()
    for p in model.parameters():  # move biases and gains off their init so they are tested too
        p.data.add_(0.02 * torch.randn_like(p))
    hf = to_hf_gpt2(model)
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.block_size))
    with torch.no_grad():
        assert_reordered_close(model(idx), hf(idx).logits, model_lengths(model, CFG.block_size))


def test_parameter_count_equals_transformers():
    model = GPT(CFG)
    hf = to_hf_gpt2(model)
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_flops_per_token_matches_flop_counter():
    model = GPT(CFG.model_copy(update={"attention": "explicit"})).eval()
    idx = torch.randint(0, CFG.vocab_size, (1, CFG.block_size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(idx)
    measured = counter.get_total_flops() / CFG.block_size
    # The explicit path computes the full T x T score matrix, as the estimate assumes.
    assert model.flops_per_token(training=False) == measured
    assert model.flops_per_token() == 3 * model.flops_per_token(training=False)


def test_tied_embeddings():
    model = GPT(CFG)
    assert model.head.out.weight is model.tok_embed.weight
    untied = GPT(CFG.model_copy(update={"tie_embeddings": False}))
    assert untied.num_parameters() == model.num_parameters() + CFG.vocab_size * CFG.n_embd


def test_context_limit():
    with pytest.raises(ValueError, match="exceeds block_size"):
        GPT(CFG)(torch.zeros(1, CFG.block_size + 1, dtype=torch.long))


def test_save_and_load_directory(tmp_path):
    import json

    model = GPT(CFG).eval()
    save_weights(model, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": CFG.model_dump()}))
    loaded = from_pretrained(tmp_path)
    idx = torch.randint(0, CFG.vocab_size, (1, 8))
    with torch.no_grad():
        assert_same(loaded(idx), model(idx))


def test_truncated_weights_are_a_clear_error(tmp_path):
    import json

    save_weights(GPT(CFG), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": CFG.model_dump()}))
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LmforgeError, match="truncated or corrupt"):
        from_pretrained(tmp_path)
