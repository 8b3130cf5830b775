"""LoRA: the layer, freezing, merging, and adapters both ways with Hugging Face's `peft` on
the converted base model (GPT-2's fused c_attn and Llama's separate projections)."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import save_pretrained
from lmforge.models.lora import (
    apply_lora,
    load_peft_adapter,
    lora_layers,
    merge_lora,
    save_peft_adapter,
    trainable_parameters,
)
from lmforge.nn.lora import LoRALinear
from tests.models.test_hf import small
from tests.numerics import assert_reordered_close, model_lengths

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

IDS = torch.tensor([[5, 17, 3, 99, 250, 7, 1, 42, 600, 2, 9]])


def randomize_adapters(model, seed: int = 3) -> None:
    """B starts at zero (the layer starts as the base); give it values so it is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.5)


def lengths(model):  # the LoRA path adds a rank-r reduction to each adapted layer
    return [*model_lengths(model, IDS.size(1)), *[8] * 2 * model.config.n_layer]


def test_the_layer_starts_as_the_base_and_merges_exactly():
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 10)
    x = torch.randn(4, 12)
    want = base(x)
    layer = LoRALinear(base, rank=4, alpha=8)
    assert torch.equal(layer(x), want)  # B = 0
    assert layer.weight is base.weight and not layer.weight.requires_grad
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = want + (x @ layer.lora_A.t() @ layer.lora_B.t()) * 2.0
    assert_reordered_close(layer(x), expected, [12, 4])
    assert_reordered_close(layer.merged()(x), layer(x), [12, 4, 4])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_only_adapters_train_and_the_counts_are_r_times_in_plus_out(family):
    model = small(family)
    names = apply_lora(model, "q,v", rank=4, alpha=8)
    assert len(names) == 2 * model.config.n_layer
    c = model.config
    kv = c.kv_heads * c.head_width
    assert trainable_parameters(model) == c.n_layer * 4 * ((c.n_embd + c.n_embd) + (c.n_embd + kv))
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def test_bad_targets_and_ranks_name_the_fix():
    model = small("gpt2")
    with pytest.raises(LmforgeError, match="unknown LoRA target.*qq.*choose from q, k, v"):
        apply_lora(model, "qq")
    with pytest.raises(LmforgeError, match="no layer of this model is named gate"):
        apply_lora(small("gpt2"), "gate")
    with pytest.raises(LmforgeError, match="rank 64 is larger than layer"):
        apply_lora(small("gpt2"), "q", rank=64)


@pytest.mark.filterwarnings("error:Found missing adapter keys")  # peft adapted only ours
@pytest.mark.parametrize(
    "family, targets", [("gpt2", "q,v"), ("gpt2", "q,k,v,out,up"), ("llama", "q,v,gate,down")]
)
def test_peft_loads_our_adapters_onto_the_converted_base(family, targets, tmp_path):
    model = small(family)
    save_pretrained(model, tmp_path / "base")  # the base before adapters: what peft loads
    apply_lora(model, targets, rank=4, alpha=8)
    randomize_adapters(model)
    save_peft_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        plain = hf(IDS).logits
    adapted = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = adapted(IDS).logits
        ours = model.eval()(IDS)
    assert_reordered_close(ours, theirs, lengths(model))
    assert (plain - theirs).abs().max() > 0.1  # the adapters changed the outputs


@pytest.mark.parametrize("family, modules", [("gpt2", ["c_attn"]), ("llama", ["q_proj", "v_proj"])])
def test_we_load_adapters_peft_made(family, modules, tmp_path):
    model = small(family)
    save_pretrained(model, tmp_path / "base")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    config = peft.LoraConfig(
        r=4, lora_alpha=12, target_modules=modules, fan_in_fan_out=family == "gpt2"
    )
    adapted = peft.get_peft_model(hf, config)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        before = model.eval()(IDS)
    names = load_peft_adapter(model, tmp_path / "adapter")
    per_module = 3 if family == "gpt2" else 1  # c_attn holds q, k and v
    assert len(names) == model.config.n_layer * len(modules) * per_module
    with torch.no_grad():
        theirs = adapted.eval()(IDS).logits
        ours = model.eval()(IDS)
    assert_reordered_close(ours, theirs, lengths(model))
    assert (before - ours).abs().max() > 0.1  # the adapters changed the outputs
    other = small("llama" if family == "gpt2" else "gpt2")
    with pytest.raises(LmforgeError, match="different base model"):
        load_peft_adapter(other, tmp_path / "adapter")


def test_merged_equals_unmerged():
    model = small("llama")
    apply_lora(model, "q,k,v,out,gate,up,down", rank=4, alpha=8)
    randomize_adapters(model)
    with torch.no_grad():
        unmerged = model.eval()(IDS)
        merge_lora(model)
        merged = model(IDS)
    assert not lora_layers(model)
    assert_reordered_close(merged, unmerged, lengths(model))


def test_lora_merge_command_folds_a_peft_adapter_into_its_base(tmp_path, capsys):
    from lmforge.cli import main
    from lmforge.models import from_pretrained

    model = small("gpt2")
    save_pretrained(model, tmp_path / "base")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    adapted = peft.get_peft_model(
        hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    args = [
        "lora",
        "merge",
        str(tmp_path / "base"),
        str(tmp_path / "adapter"),
        str(tmp_path / "out"),
    ]
    assert main(args) == 0 and "merged 9 adapted layers" in capsys.readouterr().out
    merged = from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert_reordered_close(merged(IDS), adapted.eval()(IDS).logits, lengths(merged))
    assert main(args) == 2  # OUT exists: --overwrite to replace it
    assert "--overwrite" in capsys.readouterr().err
