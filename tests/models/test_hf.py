"""Hugging Face interop, per family, both ways: a random `transformers` model with odd sizes
(3 layers, 6 heads, GQA 6/2, vocab 1000) saved and loaded into lmforge, and an lmforge model
saved and loaded by `transformers.AutoModel*`; outputs must agree within 1e-4 in fp32."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.config import load_model_preset
from lmforge.errors import LmforgeError
from lmforge.models import Transformer, from_pretrained, save_pretrained
from tests.numerics import assert_reordered_close, model_lengths

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT, WIDTH, FFN = 1000, 40, 48, 100

HF_MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=CONTEXT, n_embd=WIDTH, n_layer=3, n_head=6, n_inner=FFN
        )
    ),
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=WIDTH,
            intermediate_size=FFN,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=CONTEXT,
            rope_theta=500.0,
        )
    ),
    "bert": lambda: transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=WIDTH,
            num_hidden_layers=3,
            num_attention_heads=6,
            intermediate_size=FFN,
            max_position_embeddings=CONTEXT,
            type_vocab_size=3,
        )
    ),
    "bart": lambda: transformers.BartForConditionalGeneration(
        transformers.BartConfig(
            vocab_size=VOCAB,
            d_model=WIDTH,
            encoder_layers=3,
            decoder_layers=2,
            encoder_attention_heads=6,
            decoder_attention_heads=6,
            encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN,
            max_position_embeddings=CONTEXT,
        )
    ),
}

AUTO_CLASS = {
    "gpt2": "AutoModelForCausalLM",
    "llama": "AutoModelForCausalLM",
    "bert": "AutoModelForMaskedLM",
    "bart": "AutoModelForSeq2SeqLM",
}


def small(preset: str, **extra) -> Transformer:
    """The architecture preset at the test's sizes, randomly initialised and perturbed."""
    sizes = {"vocab_size": VOCAB, "block_size": CONTEXT, "n_layer": 3, "n_embd": WIDTH}
    sizes.update({"n_head": 6, "mlp_hidden": FFN})
    sizes.update(
        {"llama": {"n_kv_head": 2, "rope_base": 500.0}, "bart": {"n_decoder_layer": 2}}.get(
            preset, {}
        )
    )
    if preset == "bert":
        sizes["type_vocab_size"] = 3
    model = Transformer(load_model_preset(preset, {**sizes, **extra})).eval()
    perturb(model)
    return model


def perturb(model: torch.nn.Module) -> None:
    """Move weights, biases, gains (and saved buffers) off their init so all are tested."""
    torch.manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))


def inputs(family: str) -> tuple[dict, dict]:
    """The same batch as transformers keywords and as ours; the second row is padded."""
    torch.manual_seed(2)
    ids = torch.randint(3, VOCAB, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    theirs = {"input_ids": ids, "attention_mask": mask}
    ours = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        theirs["token_type_ids"] = ours["token_type_ids"] = torch.randint(0, 2, ids.shape)
    if family == "bart":
        theirs["decoder_input_ids"] = ours["decoder_input_ids"] = torch.randint(3, VOCAB, (2, 7))
    return theirs, ours


def agree(got: torch.Tensor, want: torch.Tensor, model: Transformer, extra: int = 0) -> None:
    """Equal up to reordering the sums of `model` on `inputs()` (11 tokens; BART: 11 source,
    7 target), with `extra` more reductions after the body (the pooler's width)."""
    assert got.shape == want.shape
    if model.config.arch == "encoder-decoder":
        lengths = model_lengths(model, 7, source=11)
    else:
        lengths = model_lengths(model, 11)
    assert_reordered_close(got, want, [*lengths, extra])


@pytest.mark.parametrize("family", list(HF_MODELS))
def test_transformers_model_loads_into_lmforge(family, tmp_path):
    torch.manual_seed(0)
    hf = HF_MODELS[family]().eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    theirs_in, ours_in = inputs(family)
    with torch.no_grad():
        expected = hf(**theirs_in, output_hidden_states=True)
        body = ours.body(**ours_in)
        logits = ours.head(body)
    agree(logits, expected.logits, ours)
    last_hidden = expected.decoder_hidden_states if family == "bart" else expected.hidden_states
    if family in {"gpt2", "llama", "bart"}:  # BERT's hidden_states[-1] is before the MLM head
        agree(body.hidden, last_hidden[-1], ours)


@pytest.mark.parametrize("family", list(HF_MODELS))
def test_lmforge_model_loads_into_transformers(family, tmp_path):
    ours = small(family)
    save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == family
    auto = getattr(transformers, AUTO_CLASS[family])
    hf, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mis-sized
    theirs_in, ours_in = inputs(family)
    with torch.no_grad():
        agree(ours(**ours_in), hf.eval()(**theirs_in).logits, ours)


@pytest.mark.parametrize(
    ("architecture", "head"),
    [
        ("BertModel", "none"),
        ("BertForSequenceClassification", "sequence-classification"),
        ("BertForTokenClassification", "token-classification"),
        ("BertForQuestionAnswering", "question-answering"),
    ],
)
def test_bert_heads_both_ways(architecture, head, tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=6,
        intermediate_size=FFN,
        max_position_embeddings=CONTEXT,
        num_labels=2 if head == "question-answering" else 5,
    )
    hf = getattr(transformers, architecture)(cfg).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    assert ours.config.head == head
    theirs_in, ours_in = inputs("bert")
    with torch.no_grad():
        out = hf(**theirs_in)
        got = ours(**ours_in)
        if head == "none":
            agree(got, out.last_hidden_state, ours)
            agree(ours.body(**ours_in).pooled, out.pooler_output, ours, extra=WIDTH)
        elif head == "question-answering":
            agree(got[..., 0], out.start_logits, ours)
            agree(got[..., 1], out.end_logits, ours)
        else:
            assert got.shape[-1] == 5
            agree(got, out.logits, ours)
    save_pretrained(ours, tmp_path / "back")
    again = getattr(transformers, architecture).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        for a, b in zip(again(**theirs_in).values(), out.values()):
            agree(a, b, ours, extra=WIDTH)


def test_sharded_checkpoint(tmp_path):
    hf = HF_MODELS["gpt2"]().eval()
    hf.save_pretrained(tmp_path / "one")
    whole = from_pretrained(tmp_path / "one")
    tensors = load_file(tmp_path / "one" / "model.safetensors")
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    (tmp_path / "two").mkdir()
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, tmp_path / "two" / file, {"format": "pt"})
    index = {"weight_map": {n: f for f, part in shards.items() for n in part}}
    (tmp_path / "two" / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "two" / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    sharded = from_pretrained(tmp_path / "two")
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.equal(sharded(ids), whole(ids))
    (tmp_path / "two" / "b.safetensors").unlink()
    with pytest.raises(LmforgeError, match=r"missing: b\.safetensors"):
        from_pretrained(tmp_path / "two")


# ---------------------------------------------------------------- bad input


@pytest.fixture
def gpt2_dir(tmp_path):
    HF_MODELS["gpt2"]().save_pretrained(tmp_path)
    return tmp_path


def rewrite_weights(directory, change):
    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", {"format": "pt"})


def test_missing_tensor_is_named(gpt2_dir):
    rewrite_weights(gpt2_dir, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(LmforgeError, match=r"missing 1: transformer\.h\.1\.mlp\.c_fc\.weight"):
        from_pretrained(gpt2_dir)


def test_unexpected_and_misshaped_tensors_are_named(gpt2_dir):
    def change(t):
        t["transformer.h.0.attn.c_proj.weight"] = torch.zeros(48, 50)
        t["transformer.h.7.ln_1.weight"] = torch.ones(48)
        t["extra.thing"] = torch.ones(2)

    rewrite_weights(gpt2_dir, change)
    with pytest.raises(LmforgeError) as e:
        from_pretrained(gpt2_dir)
    message = str(e.value)
    assert "unexpected 2: extra.thing, transformer.h.7.ln_1.weight" in message
    assert (
        "wrong shape 1: transformer.h.0.attn.c_proj.weight (48, 50), expected (48, 48)" in message
    )
    assert "missing 1: transformer.h.0.attn.c_proj.weight" in message


def test_config_that_contradicts_the_weights(gpt2_dir):
    config = json.loads((gpt2_dir / "config.json").read_text())
    config["n_layer"] = 2  # the file holds 3
    config["n_inner"] = 64  # the file holds 100
    (gpt2_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError) as e:
        from_pretrained(gpt2_dir)
    assert "transformer.h.2.ln_1.weight" in str(e.value)  # the third layer is unexpected
    assert "transformer.h.0.mlp.c_fc.weight (48, 100), expected (48, 64)" in str(e.value)


def test_unsupported_model_type_lists_the_supported(gpt2_dir):
    config = json.loads((gpt2_dir / "config.json").read_text())
    config["model_type"] = "mamba"
    (gpt2_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        LmforgeError, match="'mamba' is not supported; supported: gpt2, llama, bert"
    ):
        from_pretrained(gpt2_dir)


def test_unsupported_features_are_listed(gpt2_dir):
    config = json.loads((gpt2_dir / "config.json").read_text())
    config.update(activation_function="quick_gelu", scale_attn_by_inverse_layer_idx=True)
    config["architectures"] = ["GPT2DoubleHeadsModel"]
    (gpt2_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError) as e:
        from_pretrained(gpt2_dir)
    for part in ("activation_function='quick_gelu'", "scale_attn_by_inverse_layer_idx=True"):
        assert part in str(e.value)
    assert "architecture GPT2DoubleHeadsModel (supported: GPT2LMHeadModel, GPT2Model)" in str(
        e.value
    )


def test_keys_that_must_agree(tmp_path):
    HF_MODELS["bart"]().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["decoder_attention_heads"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        LmforgeError, match="encoder_attention_heads=6 but decoder_attention_heads=3"
    ):
        from_pretrained(tmp_path)


def test_a_family_refuses_what_it_cannot_hold(tmp_path):
    gqa = small("gpt2", n_kv_head=2)
    with pytest.raises(LmforgeError, match=r"gpt2 checkpoint cannot hold n_kv_head=2"):
        save_pretrained(gqa, tmp_path, "gpt2")
    with pytest.raises(LmforgeError, match="no Hugging Face family fits"):
        save_pretrained(small("gpt2", positions="sinusoidal"), tmp_path)
    assert not (tmp_path / "config.json").exists()
    save_pretrained(
        small("gpt2", n_kv_head=2, positions="rope", norm="rmsnorm", mlp="gated", bias=False),
        tmp_path,
    )
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"


def test_checkpoints_as_published(tmp_path):
    """The Hub's GPT-2 names its tensors without `transformer.` under GPT2LMHeadModel, and
    BERT pretraining checkpoints carry a pooler and a next-sentence head the MLM model has not;
    transformers loads both, and so do we."""
    hf = HF_MODELS["gpt2"]().eval()
    hf.save_pretrained(tmp_path / "gpt2")
    expected = from_pretrained(tmp_path / "gpt2")
    rewrite_weights(
        tmp_path / "gpt2",
        lambda t: t.update({k.removeprefix("transformer."): t.pop(k) for k in list(t)}),
    )
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.equal(from_pretrained(tmp_path / "gpt2")(ids), expected(ids))

    HF_MODELS["bert"]().save_pretrained(tmp_path / "bert")
    expected = from_pretrained(tmp_path / "bert")
    extra = {
        "bert.pooler.dense.weight": torch.ones(WIDTH, WIDTH),
        "bert.pooler.dense.bias": torch.ones(WIDTH),
        "cls.seq_relationship.weight": torch.ones(2, WIDTH),
        "cls.seq_relationship.bias": torch.ones(2),
    }
    rewrite_weights(tmp_path / "bert", lambda t: t.update(extra))
    with torch.no_grad():
        assert torch.equal(from_pretrained(tmp_path / "bert")(ids), expected(ids))
