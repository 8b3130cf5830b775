"""The one configurable Transformer: components by config, KV cache, heads, weights."""

import math

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from lmforge.config import ModelConfig, load_model_preset
from lmforge.errors import LmforgeError
from lmforge.models import Transformer, from_pretrained, mean_pool, save_model_dir
from lmforge.models.io import LEGACY_LAYOUT
from lmforge.nn import KVCache
from tests.numerics import assert_reordered_close, assert_same, model_lengths

SIZES = {"vocab_size": 97, "block_size": 24, "n_layer": 2, "n_embd": 24, "n_head": 6}


def build(preset: str, **extra) -> Transformer:
    """A small preset: 2 layers (a BART decoder: 3), 6 heads (Llama: 2 key/value heads)."""
    extra = {**{"llama": {"n_kv_head": 2}, "bart": {"n_decoder_layer": 3}}.get(preset, {}), **extra}
    torch.manual_seed(0)
    model = Transformer(load_model_preset(preset, {**SIZES, **extra})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


DECODERS = {
    "gpt2": {},
    "llama-gqa": {"n_kv_head": 2},
    "llama-mqa": {"n_kv_head": 1},
    "sinusoidal-post-norm": {"positions": "sinusoidal", "norm_position": "post"},
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_prefill_then_one_token_steps_equal_the_full_forward(name):
    model = build("llama" if name.startswith("llama") else "gpt2", **DECODERS[name])
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache()
        steps = [model(ids[:, :5], cache=cache)]
        for t in range(5, 12):
            steps.append(model(ids[:, t : t + 1], cache=cache))
    assert cache.length == 12 and cache.layer(0).k.shape == (2, model.config.kv_heads, 12, 4)
    assert_reordered_close(torch.cat(steps, dim=1), full, model_lengths(model, 12))


def test_encoder_decoder_cache_reuses_cross_attention():
    model = build("bart")
    src, tgt = torch.randint(0, 97, (2, 9)), torch.randint(0, 97, (2, 6))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, 7:] = 0
    with torch.no_grad():
        full = model(src, mask, decoder_input_ids=tgt)
        encoded = model.encode(src, mask)
        cache = KVCache()
        steps = [
            model(
                attention_mask=mask,
                decoder_input_ids=tgt[:, t : t + 1],
                encoder_hidden=encoded,
                cache=cache,
            )
            for t in range(6)
        ]
    assert_reordered_close(torch.cat(steps, dim=1), full, model_lengths(model, 6, source=9))
    assert cache.layer(0).cross[0].size(-2) == 9  # computed once from the 9 source tokens


def test_cache_respects_the_context_limit():
    model = build("gpt2")
    cache = KVCache()
    with torch.no_grad():
        model(torch.zeros(1, 20, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="exceeds block_size"):
            model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


def test_padding_does_not_change_real_tokens():
    model = build("bert", head="none")
    ids = torch.randint(5, 97, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 7 + [0] * 3])
    with torch.no_grad():
        alone = model(ids)
        lengths = model_lengths(model, 10, head=False)
        assert_reordered_close(model(padded, mask)[:, :7], alone, lengths)
        assert not torch.allclose(model(padded)[:, :7], alone, atol=1e-3)  # unmasked: it leaks
        pooled = mean_pool(model(padded, mask), mask)
        assert_reordered_close(pooled, alone.mean(1), [*lengths, 10], scale=alone.abs().max())


def test_components_change_parameters_as_expected():
    def n(**extra):
        return Transformer(ModelConfig(**{**SIZES, **extra})).num_parameters()

    c, layers, vocab = SIZES["n_embd"], SIZES["n_layer"], SIZES["vocab_size"]
    kv = 2 * c * c * 2 // 6 + 2 * c * 2 // 6  # k and v, weights and biases, at 2 of 6 heads
    assert n() - n(n_kv_head=2) == layers * (2 * c * c + 2 * c - kv)
    assert n(mlp="gated") - n() == layers * (4 * c * c + 4 * c)
    assert n(tie_embeddings=False) - n() == vocab * c
    assert n() - n(positions="rope") == SIZES["block_size"] * c
    assert n() - n(norm="rmsnorm") == (2 * layers + 1) * c  # norm biases
    assert n(norm_position="post") == n() - 2 * c  # no final norm
    assert n(arch="encoder", type_vocab_size=2, pooler=True) - n() == 2 * c + c * c + c
    assert (
        Transformer(ModelConfig(**SIZES)).num_parameters(non_embedding=True)
        == n() - (vocab + SIZES["block_size"]) * c
    )


@pytest.mark.parametrize("preset", ["gpt2", "llama", "bart"])
def test_flops_per_token_matches_flop_counter(preset):
    model = build(preset, attention="explicit")
    ids = torch.randint(0, 97, (1, SIZES["block_size"]))
    extra = {"decoder_input_ids": ids} if preset == "bart" else {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, **extra)
    # The explicit path computes the full T x T score matrix, as the estimate assumes.
    assert model.flops_per_token(training=False) == counter.get_total_flops() / SIZES["block_size"]


def test_attention_weights_on_request():
    model = build("bart")
    src, tgt = torch.randint(0, 97, (2, 9)), torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        body = model.body(src, decoder_input_ids=tgt, return_weights=True)
        plain = model.body(src, decoder_input_ids=tgt)
    # the weights are computed beside the output on request; the output is the same
    assert_reordered_close(body.hidden, plain.hidden, model_lengths(model, 5, source=9))
    enc, dec, cross = (body.attentions[k] for k in ("encoder", "decoder", "cross"))
    assert [w.shape for w in (enc[0], dec[0], cross[0])] == [
        (2, 6, 9, 9),
        (2, 6, 5, 5),
        (2, 6, 5, 9),
    ]
    assert len(enc) == 2 and len(dec) == len(cross) == 3
    assert (dec[1].triu(1) == 0).all() and (enc[0].triu(1) > 0).any()
    assert_reordered_close(cross[1].sum(-1), torch.ones(2, 6, 5), [9, 9])  # softmax, sum
    assert plain.attentions is None


def test_heads():
    ids = torch.randint(0, 97, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    shapes = {
        "lm": (2, 7, 97),
        "mlm": (2, 7, 97),
        "sequence-classification": (2, 3),
        "token-classification": (2, 7, 3),
        "question-answering": (2, 7, 2),
        "none": (2, 7, 24),
    }
    for head, shape in shapes.items():
        model = build("bert", head=head, num_labels=3)
        assert model(ids, mask).shape == shape, head
    # A decoder classifies from the last real token, which has seen the whole sequence.
    model = build("gpt2", head="sequence-classification", num_labels=3)
    with torch.no_grad():
        batch = model(ids, mask)
        assert_reordered_close(batch[1], model(ids[1:, :4])[0], model_lengths(model, 7))


def test_legacy_lmforge_directory_still_loads(tmp_path):
    """Run directories written before the configurable core (fused qkv, GPT names) load."""
    model = build("gpt2")
    save_model_dir(model, tmp_path)
    old, _ = LEGACY_LAYOUT.to_theirs(
        {k: v for k, v in model.state_dict().items() if k != "head.out.weight"}
    )
    assert "blocks.0.attn.qkv.weight" in old and old["blocks.0.attn.qkv.weight"].shape == (72, 24)
    save_file({k: v.contiguous() for k, v in old.items()}, tmp_path / "model.safetensors")
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        # fused q/k/v weights split into the same numbers: the same computation
        assert_same(from_pretrained(tmp_path)(ids), model(ids))


def test_lmforge_directory_errors_name_the_tensors(tmp_path):
    model = build("gpt2")
    save_model_dir(model, tmp_path)
    wrong = Transformer(ModelConfig(**{**SIZES, "n_layer": 3}))
    save_model_dir(wrong, tmp_path / "three")
    (tmp_path / "three" / "config.json").write_text((tmp_path / "config.json").read_text())
    with pytest.raises(LmforgeError, match=r"unexpected \d+: decoder\.blocks\.2\."):
        from_pretrained(tmp_path / "three")
    (tmp_path / "config.json").write_text('{"something": 1}')
    with pytest.raises(LmforgeError, match="neither 'model' .* nor 'model_type'"):
        from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="n_head=6 is not divisible by n_kv_head=4"):
        ModelConfig(n_embd=48, n_head=6, n_kv_head=4)
    assert ModelConfig(n_embd=50, n_head=6, head_dim=8).head_width == 8
    resolved = ModelConfig(arch="encoder-decoder", n_layer=3).resolved()
    assert (resolved.n_decoder_layer, resolved.n_kv_head, resolved.mlp_hidden) == (3, 6, 1536)
    with pytest.raises(LmforgeError, match="unknown model preset 'gpt5'"):
        load_model_preset("gpt5")


def test_pretraining_a_llama_style_decoder(tiny_config):
    """The pipeline trains any causal decoder the config describes, and refuses others."""
    from lmforge.train.pretrain import pretrain

    llama = {"model.positions": "rope", "model.norm": "rmsnorm", "model.mlp": "gated"}
    llama.update({"model.activation": "silu", "model.n_kv_head": 1, "model.bias": False})
    config = tiny_config(**llama)
    result = pretrain(config, progress=False, log=lambda _: None)
    model = from_pretrained(config.run_dir)
    assert model.config.positions == "rope" and model.decoder.pos_embed is None
    uniform = math.log(model.config.vocab_size)
    assert result["valid_loss_nats_per_token"] < uniform - 0.2  # it learned something
    with pytest.raises(LmforgeError, match="a causal .* or a masked .* language model"):
        pretrain(tiny_config(**{"model.arch": "encoder"}), progress=False, log=lambda _: None)


@pytest.mark.parametrize("preset", ["gpt2", "llama"])
def test_left_padded_batch_with_positions_equals_each_sequence_alone(preset):
    model = build(preset)
    short, long = torch.randint(0, 97, (1, 5)), torch.randint(0, 97, (1, 8))
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = (torch.arange(8) >= torch.tensor([[3], [0]])).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = model(ids, mask, positions=positions)
        lengths = model_lengths(model, 8)
        assert_reordered_close(batch[0, 3:], model(short)[0], lengths)
        assert_reordered_close(batch[1], model(long)[0], lengths)
        cache = KVCache()
        model(ids, mask, positions=positions, cache=cache)
        step = torch.randint(0, 97, (2, 1))
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        stepped = model(step, mask, positions=positions[:, -1:] + 1, cache=cache)
        alone = model(torch.cat([short, step[:1]], 1))[:, -1]
        assert_reordered_close(stepped[0, -1], alone[0], model_lengths(model, 9))
