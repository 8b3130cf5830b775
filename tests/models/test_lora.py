"""LoRA: the layer, freezing, merging, and adapters both ways with Hugging Face's `peft` on
the converted base model (GPT-2's fused c_attn and Llama's separate projections), with a
trained task head as PEFT's modules_to_save (BERT's classifier and QA head)."""

import json

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import save_pretrained
from lmforge.models.lora import (
    apply_lora,
    load_peft_adapter,
    lora_layers,
    merge_lora,
    peft_head,
    save_peft_adapter,
    trainable_parameters,
)
from lmforge.nn.lora import LoRALinear
from lmforge.tasks import with_head
from tests.models.test_hf import WIDTH, inputs, small
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


@pytest.mark.parametrize(
    "family, expected",
    [("gpt2", {"q", "k", "v", "out", "up", "down"}), ("bert", {"q", "k", "v", "out", "up", "down"}),
     ("llama", {"q", "k", "v", "out", "gate", "up", "down"})],
)  # fmt: skip
def test_the_default_targets_are_every_linear_layer_of_the_body(family, expected):
    model = small(family)
    names = apply_lora(model)
    assert {n.rsplit(".", 1)[-1] for n in names} == expected
    assert len(names) == len(expected) * model.config.n_layer  # BERT's pooler is no target
    assert apply_lora(small(family), "all") == names


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
    "family, targets",
    [("gpt2", "q,v"), ("gpt2", "q,k,v,out,up"), ("llama", "q,v,gate,down"), ("llama", "all")],
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


# ---------------------------------------------------------------- a trained task head

HEADS = {  # our head -> (the transformers class peft loads onto, number of outputs, its name)
    "sequence-classification": ("AutoModelForSequenceClassification", 3, "classifier"),
    "question-answering": ("AutoModelForQuestionAnswering", 2, "qa_outputs"),
}


def bert_base(tmp_path):
    """A BERT body with BERT's pooler (what BertForSequenceClassification reads), saved in
    Hugging Face's layout as BertModel: the converted base an adapter is loaded onto."""
    base = small("bert", head="none", pooler=True)
    save_pretrained(base, tmp_path / "base")
    return base


def logits(model_output, head: str) -> torch.Tensor:
    """Ours and transformers' outputs in one shape: (batch, labels) or (batch, time, 2)."""
    if isinstance(model_output, torch.Tensor):
        return model_output
    if head == "question-answering":
        return torch.stack([model_output.start_logits, model_output.end_logits], -1)
    return model_output.logits


def tuned_with_head(base, head: str):
    """The base with a new head, adapters on q and v, both given values (as after training)."""
    model = with_head(base, head, HEADS[head][1])
    apply_lora(model, "q,v", rank=4, alpha=8, train_head=True)
    randomize_adapters(model)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.filterwarnings("error:Found missing adapter keys")
@pytest.mark.parametrize("head", list(HEADS))
def test_peft_loads_our_adapter_with_the_trained_head_onto_the_converted_base(head, tmp_path):
    from lmforge.models import from_pretrained

    auto_class, outputs, module = HEADS[head]
    model = tuned_with_head(bert_base(tmp_path), head)
    save_peft_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == [module]
    theirs_in, ours_in = inputs("bert")
    if head == "question-answering":  # peft's QA wrapper does not pass token_type_ids on
        del theirs_in["token_type_ids"], ours_in["token_type_ids"]
    kwargs = {"num_labels": outputs} if head == "sequence-classification" else {}
    hf = getattr(transformers, auto_class).from_pretrained(tmp_path / "base", **kwargs).eval()
    with torch.no_grad():
        fresh = logits(hf(**theirs_in), head)  # their new head: random
        adapted = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
        theirs = logits(adapted(**theirs_in), head)
        ours = model(**ours_in)
    assert_reordered_close(ours, theirs, [*lengths(model), WIDTH])  # WIDTH: the pooler
    assert (fresh - theirs).abs().max() > 0.1  # the head came from the adapter

    # and back into lmforge: the base with a new (random) head takes the trained one
    again = with_head(from_pretrained(tmp_path / "base"), head, outputs)
    load_peft_adapter(again, tmp_path / "adapter")
    assert all(p.requires_grad for p in again.head.parameters())  # trainable, as it trained
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**ours_in), ours, rtol=0, atol=1e-6)


def test_we_load_a_peft_classifier_adapter_and_lora_merge_puts_the_head_on(tmp_path, capsys):
    from lmforge.cli import main
    from lmforge.models import from_pretrained

    bert_base(tmp_path)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "base", num_labels=3
    )
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=12, target_modules=["query"])
    adapted = peft.get_peft_model(hf, config)  # SEQ_CLS: peft saves the classifier too
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(0, 0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    theirs_in, ours_in = inputs("bert")
    with torch.no_grad():
        theirs = adapted.eval()(**theirs_in).logits
    ours = with_head(from_pretrained(tmp_path / "base"), "sequence-classification", 3)
    load_peft_adapter(ours, tmp_path / "adapter")
    with torch.no_grad():
        assert_reordered_close(ours.eval()(**ours_in), theirs, [*lengths(ours), WIDTH])
    # the merge command reads the head's kind and size from the adapter and puts it on BASE
    out = tmp_path / "merged"
    assert main(["lora", "merge", str(tmp_path / "base"), str(tmp_path / "adapter"), str(out)]) == 0
    merged = from_pretrained(out)
    assert merged.config.head == "sequence-classification" and merged.config.num_labels == 3
    with torch.no_grad():
        assert_reordered_close(merged(**ours_in), theirs, [*lengths(merged), WIDTH, 4])
    # a head of another size has no place for it: refused before the model changes
    two = with_head(from_pretrained(tmp_path / "base"), "sequence-classification", 2)
    before = {k: v.clone() for k, v in two.state_dict().items()}
    with pytest.raises(LmforgeError, match="another task or number of labels"):
        load_peft_adapter(two, tmp_path / "adapter")
    assert not lora_layers(two) and all(
        torch.equal(before[k], v) for k, v in two.state_dict().items()
    )


def test_a_head_transformers_has_no_class_for_stays_out_of_the_adapter(tmp_path):
    base = small("bert", head="none", pooler=True)
    model = with_head(base, "sequence-classification", 3, "mean")  # their classifier: pooler
    apply_lora(model, "q,v", rank=4, alpha=8, train_head=True)
    tensors, modules, why = peft_head(model)
    assert not tensors and not modules and "pooling mean" in why
    save_peft_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and config["task_type"] == "SEQ_CLS"
    frozen = with_head(small("bert", head="none", pooler=True), "sequence-classification", 3)
    apply_lora(frozen, "q", rank=4, train_head=False)
    assert peft_head(frozen)[2] == "the model has no trained task head"
