"""Fine-tuning end to end on tiny models: it learns, keeps the best weights, and the output
directory serves `lmforge evaluate TASK` and `lmforge.pipeline`."""

import json

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.models import from_pretrained
from lmforge.tasks import with_head, with_settings
from lmforge.tasks.finetune import finetune
from lmforge.tasks.seq2seq import SEPARATOR
from lmforge.train.losses import IGNORE
from tests.numerics import reorder_bound
from tests.tasks.conftest import sentiment_records, write_jsonl

FAST = {"train.learning_rate": 3e-3, "train.batch_size": 8, "train.device": "cpu"}


@pytest.fixture(scope="module")
def sentiment_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    return {
        split: write_jsonl(root / f"{split}.jsonl", sentiment_records(n, seed))
        for split, n, seed in (("train", 96, 0), ("valid", 24, 1), ("test", 24, 2))
    }


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_classification_learns_and_serves(bases, sentiment_files, tmp_path, arch):
    out = tmp_path / "out"
    summary = finetune(
        "sentiment",
        bases[arch],
        sentiment_files["train"],
        out,
        sentiment_files["valid"],
        epochs=4,
        overrides=FAST,
        progress=False,
        log=lambda m: None,
    )
    assert summary["valid"]["accuracy"] >= 0.9  # chance is 0.5; the adjective decides
    assert summary["valid"]["accuracy"] > summary["valid"]["majority_baseline"]
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "results.json"}
    assert not {"train_state.pt", "best.safetensors", "previous"} & {p.name for p in out.iterdir()}
    # the kept weights are the best evaluation's, and they reproduce its figure
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["event"] == "eval"]
    assert summary["valid"]["accuracy"] == pytest.approx(max(r["accuracy"] for r in evals))

    classify = lmforge.pipeline("sentiment", model=out)
    assert classify("the king was lovely")["label"] == "pos"
    ranked = classify(["the day was vile", "the song was sweet"], top_k=2)
    assert [r[0]["label"] for r in ranked] == ["neg", "pos"]
    # softmax probabilities: a sum over 2 labels, a division, and our sum of the two
    assert sum(x["score"] for x in ranked[0]) == pytest.approx(1.0, abs=reorder_bound([2, 1, 2], 1))


def test_early_stopping_stops_and_keeps_the_best(bases, sentiment_files, tmp_path):
    # a learning rate this high makes the metric stall; patience 1 stops at the first miss
    summary = finetune(
        "classification",
        bases["encoder"],
        sentiment_files["train"],
        tmp_path / "out",
        sentiment_files["valid"],
        epochs=30,
        overrides={**FAST, "train.early_stopping_patience": 1, "train.learning_rate": 0.5},
        progress=False,
        log=lambda m: None,
    )
    assert summary["stopped_early"] and summary["steps"] < 30 * 12
    assert summary["best_step"] < summary["steps"]


def test_with_head_carries_the_body_over(bases):
    base = from_pretrained(bases["encoder"])
    model = with_head(base, "sequence-classification", 3)
    assert model.config.num_labels == 3 and model.head.out.out_features == 3
    ours, theirs = model.state_dict(), base.state_dict()
    body = [k for k in theirs if not k.startswith("head.")]
    assert body and all(torch.equal(ours[k], theirs[k]) for k in body)


def test_evaluate_cli_and_bad_inputs(bases, sentiment_files, tmp_path, capsys):
    out = tmp_path / "clf"
    args = ["finetune", "classification", "--model", str(bases["encoder"]), "--output", str(out)]
    files = ["--train", sentiment_files["train"], "--valid", sentiment_files["valid"]]
    assert main([*args, *files, "--epochs", "1", "--no-progress", "--train.device=cpu"]) == 0
    report = tmp_path / "test.json"
    cmd = ["evaluate", "classification", "--model", str(out), "--data", sentiment_files["test"]]
    assert main([*cmd, "--output", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "confusion matrix" in printed
    assert json.loads(report.read_text())["examples"] == 24

    unseen = write_jsonl(tmp_path / "unseen.jsonl", [{"text": "the day was odd", "label": "meh"}])
    assert main(["evaluate", "classification", "--model", str(out), "--data", unseen]) == 2
    assert "label 'meh' was not seen in training" in capsys.readouterr().err
    # a base model without the task's head, and a task the model was not tuned for
    assert main(["evaluate", "qa", "--model", str(out), "--data", unseen]) == 2
    assert "was fine-tuned for classification, not qa" in capsys.readouterr().err
    with pytest.raises(LmforgeError, match="has no task head"):
        lmforge.pipeline("classification", model=bases["encoder"])
    # an existing output is not replaced without --overwrite, and nothing is lost
    before = (out / "model.safetensors").read_bytes()
    assert main([*args, *files, "--epochs", "1", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    one_label = write_jsonl(tmp_path / "one.jsonl", [{"text": "a b", "label": "x"}] * 3)
    assert main([*args, "--train", one_label, "--output", str(tmp_path / "new")]) == 2
    assert "only the label 'x'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main([*args, *files, "--overwrite", "--model.n_layer=3"]) == 2
    assert "and model.dropout only, not model.n_layer" in capsys.readouterr().err


def train_losses(directory) -> list[float]:
    rows = map(json.loads, (directory / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in rows if r["event"] == "train"]


def test_model_dropout_is_the_one_model_setting_a_finetune_changes(
    bases, sentiment_files, tmp_path, capsys
):
    def run(name, **extra):
        return finetune(
            "sentiment", bases["encoder"], sentiment_files["train"], tmp_path / name,
            sentiment_files["valid"], epochs=1, progress=False, log=lambda m: None,
            overrides={**FAST, "train.min_steps": 1, "train.max_steps": 6, **extra},
        )  # fmt: skip

    run("base")  # the base's own dropout: 0 (tests/tasks/conftest.py)
    run("same", **{"model.dropout": 0.0})
    run("half", **{"model.dropout": 0.5})
    assert train_losses(tmp_path / "same") == train_losses(tmp_path / "base")
    assert train_losses(tmp_path / "half") != train_losses(tmp_path / "base")
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config["model"]["dropout"] == 0.5
    tuned = from_pretrained(tmp_path / "half")
    assert {m.p for m in tuned.modules() if isinstance(m, torch.nn.Dropout)} == {0.5}
    # any other model key, or a probability outside [0, 1): exit 2, nothing written
    args = ["finetune", "sentiment", "--model", str(bases["encoder"]), "--train",
            sentiment_files["train"], "--output", str(tmp_path / "bad")]  # fmt: skip
    for bad, message in [
        ("--model.n_embd=64", "and model.dropout only, not model.n_embd"),
        ("--model.dropout=1.5", "model.dropout must be a number in [0, 1)"),
        ("--model.dropout=some", "model.dropout must be a number in [0, 1)"),
    ]:
        assert main([*args, bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_with_settings_sets_every_dropout_and_keeps_every_weight(bases):
    base = with_head(from_pretrained(bases["encoder"]), "sequence-classification", 3)
    changed = with_settings(base, dropout=0.25)
    assert changed.config.dropout == 0.25 and base.config.dropout == 0.0
    drops = [m.p for m in changed.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) > 2 * base.config.n_layer and set(drops) == {0.25}
    attention = [m.dropout for n, m in changed.named_modules() if n.endswith(".attn")]
    assert attention and set(attention) == {0.25}  # the attention weights' dropout too
    a, b = base.state_dict(), changed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(5, base.config.vocab_size, (2, 7))
    with torch.no_grad():
        assert torch.equal(base.eval()(ids), changed.eval()(ids))
        assert not torch.equal(changed.train()(ids), changed.train()(ids))  # it drops
    assert with_settings(base, dropout=0.0) is base


def copy_records(n, seed):
    import random

    rng = random.Random(seed)
    words = ["good", "bad", "king", "night", "song", "day"]
    out = []
    for _ in range(n):
        source = " ".join(rng.choice(words) for _ in range(3))
        out.append({"source": source, "target": " ".join(reversed(source.split()))})
    return out


def test_decoder_prompt_masks_the_source(bases):
    from lmforge.infer import load_model_and_tokenizer
    from lmforge.tasks import get_task

    model, tokenizer = load_model_and_tokenizer(bases["decoder"])
    task = get_task("translation")(tokenizer, model.config, {"max_target_tokens": 16})
    [example] = task.examples([{"source": "the day", "target": "was good", "_where": "x"}])
    prompt = tokenizer.encode("the day" + SEPARATOR, add_special_tokens=False)
    target = tokenizer.encode("was good", add_special_tokens=False) + [tokenizer.eot_id]
    assert example["input_ids"] == (prompt + target)[:-1]
    # position i predicts token i + 1: nothing before the last prompt token is scored
    assert example["labels"] == [IGNORE] * (len(prompt) - 1) + target


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_seq2seq_learns_a_copy_task(bases, tmp_path, arch):
    train = write_jsonl(tmp_path / "train.jsonl", copy_records(160, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", copy_records(16, 1))
    summary = finetune(
        "translation",
        bases[arch],
        train,
        tmp_path / "out",
        valid,
        epochs=12,
        options={"max_target_tokens": 12},
        overrides={**FAST, "train.learning_rate": 5e-3, "train.early_stopping_patience": 0},
        progress=False,
        log=lambda m: None,
    )
    # reversing three known words: a model that learned it scores far above zero
    assert summary["valid"]["chrf"] > 60
    translate = lmforge.pipeline("translation", model=tmp_path / "out")
    result = translate(["good king day"])
    assert isinstance(result, list) and isinstance(result[0]["translation_text"], str)


def interrupt_at_step_5(run) -> None:
    """`run()` a classification fine-tuning with a real Ctrl-C during step 5: that step
    finishes, a checkpoint is written, and the run stops with TrainingInterrupted."""
    import os
    import signal

    from lmforge.tasks.classification import Classification
    from lmforge.train.trainer import TrainingInterrupted

    calls = []
    original = Classification.loss

    def interrupting(self, model, batch):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    Classification.loss = interrupting
    try:
        with pytest.raises(TrainingInterrupted):
            run()
    finally:
        Classification.loss = original


def test_interrupted_finetuning_resumes_to_the_same_model(bases, sentiment_files, tmp_path):
    def run(out, **kwargs):
        return finetune(
            "classification",
            bases["encoder"],
            sentiment_files["train"],
            out,
            sentiment_files["valid"],
            epochs=2,
            overrides={**FAST, "train.early_stopping_patience": 0},
            progress=False,
            log=lambda m: None,
            **kwargs,
        )

    whole = run(tmp_path / "whole")
    interrupt_at_step_5(lambda: run(tmp_path / "cut"))
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed["steps"] == whole["steps"] and resumed["valid"] == whole["valid"]
    a = from_pretrained(tmp_path / "whole").state_dict()
    b = from_pretrained(tmp_path / "cut").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_records_without_targets_stop_before_training(bases, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", copy_records(8, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"source": "good day"}])
    with pytest.raises(LmforgeError, match=r"valid.jsonl:1: no field 'target'"):
        finetune("translation", bases["decoder"], train, tmp_path / "out", valid, progress=False)
    assert not (tmp_path / "out").exists()
