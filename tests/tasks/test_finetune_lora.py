"""Fine-tuning with --method lora: adapters on a frozen base learn the task, the output is a
plain model directory (merged weights) plus the adapters alone in PEFT's layout."""

import json

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
from tests.tasks.conftest import sentiment_records, write_jsonl
from tests.tasks.test_finetune import FAST, copy_records, interrupt_at_step_5

# The test bases are random, not pretrained: adapters on q and v alone (the default, for
# pretrained bases) cannot make their features separate the classes (0.54 accuracy, chance
# 0.5); on every projection they do (0.96).
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
