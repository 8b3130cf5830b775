"""The main job, end to end: corpus -> tokenizer -> token shards -> GPT -> evaluation -> sample.

Everything lands in one run directory (`runs/<name>/`):
  config.json         the resolved config (model section sized to the tokenizer)
  tokenizer.json      the trained tokenizer (Hugging Face format)
  data/               token shards of the train and valid splits
  model.safetensors   weights;  train_state.pt  optimizer, RNG and step, for --resume
  metrics.jsonl       one JSON object per log/eval event;  loss.png  the curves
  results.json        final held-out loss and bits per byte;  samples.txt  generated text
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.config import Config, ModelConfig
from lmforge.data import WindowSampler, eval_windows, open_split, write_split
from lmforge.device import pick_device, resolve_precision
from lmforge.errors import LmforgeError
from lmforge.fileio import write_json, write_text
from lmforge.infer import generate
from lmforge.models import GPT
from lmforge.text import load_corpus
from lmforge.tokenizers import Tokenizer
from lmforge.train.checkpoint import STATE_FILE, has_checkpoint
from lmforge.train.metrics import plot_losses
from lmforge.train.trainer import evaluate, train


def _saved_config(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    """Check the run directory against what was asked; never overwrite without being told."""
    run_dir = cfg.run_dir
    if resume:
        if not has_checkpoint(run_dir):
            raise LmforgeError(f"nothing to resume in {run_dir} (no {STATE_FILE}); drop --resume")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        looks_like_run = _saved_config(run_dir) is not None or has_checkpoint(run_dir)
        if not cfg.run.overwrite:
            raise LmforgeError(
                f"run directory {run_dir} already exists; continue it with --resume, replace it "
                "with --run.overwrite=true, or choose another --run.name"
            )
        if not looks_like_run:
            raise LmforgeError(f"{run_dir} is not an lmforge run directory; refusing to delete it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def sized_model_config(model: ModelConfig, tokenizer: Tokenizer) -> ModelConfig:
    if model.vocab_size == 0:
        return model.model_copy(update={"vocab_size": tokenizer.vocab_size})
    if model.vocab_size != tokenizer.vocab_size:
        raise LmforgeError(
            f"model.vocab_size={model.vocab_size} but the tokenizer has {tokenizer.vocab_size} "
            "tokens; set --model.vocab_size=0 to take the tokenizer's size"
        )
    return model


def _check_same_run(run_dir: Path, cfg: Config) -> None:
    saved = _saved_config(run_dir)
    if saved is None:
        raise LmforgeError(f"{run_dir}/config.json is missing or corrupt; cannot resume this run")
    for section in ("model", "data"):
        now = getattr(cfg, section).model_dump(mode="json")
        if section == "model" and now["vocab_size"] == 0:
            now["vocab_size"] = saved[section]["vocab_size"]
        diff = sorted(k for k in now if now[k] != saved[section].get(k))
        if diff:
            changes = ", ".join(
                f"{section}.{k}: {saved[section].get(k)!r} -> {now[k]!r}" for k in diff
            )
            raise LmforgeError(
                f"{run_dir} was made with a different config ({changes}); "
                "resume with the same settings or start a new --run.name"
            )


def build_data(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> Tokenizer:
    """Read the corpus, train the tokenizer on the training split, write both splits' shards."""
    train_docs, valid_docs = load_corpus(
        cfg.data.corpus, cfg.data.text_field, cfg.data.invalid_utf8, cfg.data.valid_fraction
    )
    log(f"corpus: {len(train_docs)} train / {len(valid_docs)} valid documents")
    tokenizer = Tokenizer.train((d.text for d in train_docs), algorithm=cfg.data.tokenizer)
    tokenizer.save(run_dir)
    for split, docs in (("train", train_docs), ("valid", valid_docs)):
        info = write_split(
            run_dir / "data",
            split,
            ((tokenizer.encode_array(d.text), len(d.text.encode("utf-8"))) for d in docs),
            tokenizer.vocab_size,
            separator=tokenizer.eot_id,
        )
        log(f"{split}: {info.tokens:,} tokens from {info.text_bytes:,} bytes ({info.dtype})")
    return tokenizer


def pretrain(
    cfg: Config, resume: bool = False, progress: bool = True, log: Callable[[str], None] = print
) -> dict:
    """Run the whole job; returns the figures also written to results.json."""
    started = time.perf_counter()
    run_dir = prepare_run_dir(cfg, resume)
    device = pick_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(cfg.train.seed)

    if resume:
        _check_same_run(run_dir, cfg)
        tokenizer = Tokenizer.load(run_dir)
    else:
        tokenizer = build_data(cfg, run_dir, log)
    cfg = cfg.model_copy(update={"model": sized_model_config(cfg.model, tokenizer)})
    write_json(run_dir / "config.json", cfg.model_dump(mode="json"))

    train_tokens, _ = open_split(run_dir / "data", "train")
    valid_tokens, _ = open_split(run_dir / "data", "valid")
    token_bytes = torch.tensor(tokenizer.token_bytes())
    model = GPT(cfg.model).to(device)
    t = cfg.train
    tokens_per_step = t.batch_size * t.grad_accum_steps * cfg.model.block_size
    log(
        f"model: {model.num_parameters():,} parameters, "
        f"{model.flops_per_token() / 1e6:.1f} MFLOPs/token (train); device {device}, {precision}; "
        f"{t.max_steps} steps x {tokens_per_step:,} tokens"
    )

    sampler = WindowSampler(train_tokens, cfg.model.block_size, t.batch_size, t.seed)
    result = train(
        model, t, sampler, valid_tokens, token_bytes, run_dir, device, precision, resume, progress
    )
    final = evaluate(
        model,
        eval_windows(valid_tokens, cfg.model.block_size, t.batch_size),
        token_bytes,
        device,
        precision,
    )
    prompt = tokenizer.encode(cfg.run.sample_prompt) or [tokenizer.eot_id or 0]
    sample = cfg.run.sample_prompt + tokenizer.decode(
        generate(
            model,
            prompt,
            cfg.run.sample_tokens,
            cfg.run.sample_temperature,
            cfg.run.sample_top_k,
            seed=t.seed,
            stop_ids=(tokenizer.eot_id,),
        )
    )
    summary = {
        "steps": result.step,
        "stopped_by_time_budget": result.stopped_by_budget,
        "valid_loss_nats_per_token": final["loss"],
        "valid_bits_per_byte": final["bpb"],
        "valid_tokens": final["tokens"],
        "parameters": model.num_parameters(),
        "device": str(device),
        "precision": precision,
        "minutes": (time.perf_counter() - started) / 60,
    }
    write_json(run_dir / "results.json", summary)
    write_text(run_dir / "samples.txt", sample + "\n")
    plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return {**summary, "sample": sample}
