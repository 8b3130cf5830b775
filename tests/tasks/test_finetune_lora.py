"""Fine-tuning with --method lora: adapters on a frozen base learn the task, the output is a
plain model directory (merged weights) plus the adapters alone in PEFT's layout."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import lmforge
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.models import from_pretrained
from lmforge.models.lora import load_peft_adapter
from lmforge.tasks import with_head
from lmforge.tasks.finetune import finetune
from tests.tasks.conftest import make_base, sentiment_records, write_jsonl
from tests.tasks.test_finetune import FAST, copy_records, interrupt_at_step_5
from tests.tasks.test_finetune_defaults import with_st_pooling

# The test bases are random, not pretrained: adapters on q and v alone cannot make their
# features separate the classes (0.54 accuracy, chance 0.5); on every projection (the
# default, `all`) they do (0.96), at a rate for a tiny random model.
LORA = {
    **FAST,
    "train.learning_rate": 1e-2,
    "train.head_lr_scale": 1.0,  # a small set's 10x head is for pretrained bodies near 1e-4
    "lora.rank": 8,
    "lora.alpha": 16,
    "lora.targets": "q,k,v,out,up,down",
}


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    return {
        split: write_jsonl(root / f"{split}.jsonl", sentiment_records(n, seed))
        for split, n, seed in (("train", 96, 0), ("valid", 24, 1))
    }


def test_lora_classification_learns_with_a_fraction_of_the_weights(bases, sentiment, tmp_path):
    out = tmp_path / "out"
    summary = finetune(
        "sentiment",
        bases["encoder"],
        sentiment["train"],
        out,
        sentiment["valid"],
        epochs=6,
        method="lora",
        overrides=LORA,
        progress=False,
        log=lambda m: None,
    )
    assert summary["valid"]["accuracy"] >= 0.9  # chance is 0.5
    assert summary["method"] == "lora"
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 2
    assert {p.name for p in (out / "adapter").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    saved = json.loads((out / "config.json").read_text())
    assert saved["lora"]["targets"] == "q,k,v,out,up,down" and saved["lora"]["rank"] == 8
    # model.safetensors holds the merged weights: a plain model that every command loads
    assert not any("lora_" in k for k in load_file(out / "model.safetensors"))
    classify = lmforge.pipeline("sentiment", model=out)
    assert classify("the king was lovely")["label"] == "pos"
    # the body's frozen weights are the base's; the adapters hold what was learned
    base = from_pretrained(bases["encoder"])
    tuned = from_pretrained(out)
    assert torch.equal(base.tok_embed.weight, tuned.tok_embed.weight)
    assert not torch.equal(
        base.encoder.blocks[0].attn.q.weight, tuned.encoder.blocks[0].attn.q.weight
    )
    # base + adapters (loaded back from the PEFT files) + the trained head = the output model
    rebuilt = with_head(base, "sequence-classification", 2)
    rebuilt.head.load_state_dict(tuned.head.state_dict())
    load_peft_adapter(rebuilt, out / "adapter")
    ids = torch.randint(5, base.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(ids), tuned(ids), rtol=0, atol=1e-5)


def test_lora_on_a_decoder_for_a_generative_task(bases, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_records(160, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", copy_records(16, 1))
    summary = finetune(
        "translation",
        bases["decoder"],
        train,
        tmp_path / "out",
        valid,
        epochs=12,
        method="lora",
        options={"max_target_tokens": 12},
        overrides={**LORA, "train.early_stopping_patience": 0},
        progress=False,
        log=lambda m: None,
    )
    # an untrained model scores 0 here; full fine-tuning over 60 (test_finetune.py); adapters
    # on a random, frozen base learn part of the copy task in the same 12 epochs (25)
    assert summary["valid"]["chrf"] > 15
    assert summary["trainable_parameters"] < summary["parameters"] / 2


def test_bad_lora_settings_are_refused_before_anything_is_written(bases, sentiment, tmp_path):
    def run(method, **extra):
        return finetune(
            "sentiment",
            bases["encoder"],
            sentiment["train"],
            tmp_path / "out",
            sentiment["valid"],
            method=method,
            overrides={**FAST, **extra},
            progress=False,
            log=lambda m: None,
        )

    with pytest.raises(LmforgeError, match="unknown LoRA target.*qkv.*choose from q, k, v"):
        run("lora", **{"lora.targets": "qkv"})
    with pytest.raises(LmforgeError, match="rank 500 is larger than layer"):
        run("lora", **{"lora.rank": 500})
    with pytest.raises(LmforgeError, match="lora.\\* settings need --method lora"):
        run("full", **{"lora.rank": 4})
    with pytest.raises(LmforgeError, match="unknown setting.*lora.ranks"):
        run("lora", **{"lora.ranks": 4})
    assert not (tmp_path / "out").exists()
    code = main(["finetune", "sentiment", "--model", str(bases["encoder"]), "--train",
                 sentiment["train"], "--output", str(tmp_path / "o"), "--method", "lora",
                 "--lora.targets=gate"])  # fmt: skip
    assert code == 2 and not (tmp_path / "o").exists()


def test_interrupted_lora_resumes_to_the_same_model_and_only_with_lora(bases, sentiment, tmp_path):
    def run(out, method="lora", **kwargs):
        return finetune(
            "classification",
            bases["encoder"],
            sentiment["train"],
            out,
            sentiment["valid"],
            epochs=2,
            method=method,
            overrides={**LORA, "train.early_stopping_patience": 0},
            progress=False,
            log=lambda m: None,
            **kwargs,
        )

    whole = run(tmp_path / "whole")
    interrupt_at_step_5(lambda: run(tmp_path / "cut"))
    with pytest.raises(LmforgeError, match="fine-tuned with --method lora"):
        finetune(
            "classification", bases["encoder"], sentiment["train"], tmp_path / "cut",
            sentiment["valid"], epochs=2, resume=True, overrides=FAST, progress=False,
            log=lambda m: None,
        )  # fmt: skip
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed["steps"] == whole["steps"] and resumed["valid"] == whole["valid"]
    a = from_pretrained(tmp_path / "whole").state_dict()
    b = from_pretrained(tmp_path / "cut").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_linear_probe_trains_the_head_alone(bases, sentiment, tmp_path):
    summary = finetune(
        "sentiment", bases["encoder"], sentiment["train"], tmp_path / "probe",
        sentiment["valid"], epochs=4, method="probe", progress=False,
        overrides={k: v for k, v in FAST.items() if k != "train.learning_rate"},
        log=lambda m: None,
    )  # fmt: skip
    tuned = from_pretrained(tmp_path / "probe")
    head = sum(p.numel() for p in tuned.head.parameters())
    assert summary["method"] == "probe" and summary["trainable_parameters"] == head
    base = from_pretrained(bases["encoder"])
    body = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    tuned_state = tuned.state_dict()
    assert all(torch.equal(v, tuned_state[k]) for k, v in body.items())  # features fixed
    assert summary["valid"]["accuracy"] >= summary["valid"]["majority_baseline"]
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    assert config["method"] == "probe" and config["train"]["learning_rate"] == 1e-2
    with pytest.raises(LmforgeError, match="probe trains a new task head.*translation"):
        finetune("translation", bases["decoder"], sentiment["train"], tmp_path / "t",
                 method="probe", progress=False, log=lambda m: None)  # fmt: skip


def test_the_trained_head_goes_into_the_adapter_where_transformers_has_its_class(
    bases, sentiment, tmp_path
):
    """A head that reads BERT's pooler is BertForSequenceClassification's classifier: the
    adapter saves it as PEFT's modules_to_save, and base + adapter alone rebuild the model.
    A mean-pooled head (a sentence-transformers base, as all-MiniLM-L6-v2) has no class
    there: the adapter holds the adapters, and the run says where the head is."""
    logged = []

    def run(base, name):
        finetune(
            "sentiment", base, sentiment["train"], tmp_path / name, sentiment["valid"],
            epochs=1, method="lora", progress=False, log=logged.append,
            overrides={**LORA, "train.min_steps": 1, "train.max_steps": 4},
        )  # fmt: skip
        return json.loads((tmp_path / name / "adapter" / "adapter_config.json").read_text())

    pooled = make_base(tmp_path, "bert", "wordpiece", "pooled", pooler=True)
    assert run(pooled, "pooler")["modules_to_save"] == ["classifier"]
    rebuilt = with_head(from_pretrained(pooled), "sequence-classification", 2)
    load_peft_adapter(rebuilt, tmp_path / "pooler" / "adapter")
    tuned = from_pretrained(tmp_path / "pooler")
    ids = torch.randint(5, tuned.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(ids), tuned(ids), rtol=0, atol=1e-5)
    assert not any("not the task head" in line for line in logged)

    mean = tmp_path / "mean-base"
    shutil.copytree(bases["encoder"], mean)
    config = run(with_st_pooling(mean, pooling_mode_mean_tokens=True), "mean")
    assert json.loads((tmp_path / "mean" / "config.json").read_text())["model"]["pooling"] == "mean"
    assert config["modules_to_save"] is None
    assert any("not the task head" in line and "pooling mean" in line for line in logged)


def test_lora_defaults_adapt_every_linear_layer_at_ten_times_the_rate(bases, sentiment, tmp_path):
    summary = finetune(
        "sentiment", bases["encoder"], sentiment["train"], tmp_path / "d", sentiment["valid"],
        epochs=1, method="lora", progress=False, log=lambda m: None,
        overrides={"train.batch_size": 8, "train.device": "cpu", "train.min_steps": 1,
                   "train.max_steps": 2},
    )  # fmt: skip
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["train"]["learning_rate"] == 1e-3  # full fine-tuning's is 1e-4
    assert config["lora"]["targets"] == "all" and config["lora"]["rank"] == 16
    assert config["lora"]["alpha"] == 32
    c, r = from_pretrained(bases["encoder"]).config, 16
    per_block = 4 * r * 2 * c.n_embd + 2 * r * (c.n_embd + c.mlp_width)  # q k v out, up down
    head = c.n_embd * 2 + 2
    assert summary["trainable_parameters"] == c.n_layer * per_block + head
