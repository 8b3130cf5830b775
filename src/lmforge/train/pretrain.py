"""The main job, end to end: corpus -> tokenizer -> token shards -> GPT -> evaluation -> sample.
A BERT-shaped config (encoder, mlm head) is pretrained the same way with the masked-LM
objective (trainer.MaskedLM); its sample fills in [MASK]s.

Everything lands in one run directory (`runs/<name>/`):
  config.json         the resolved config (model section sized to the tokenizer)
  tokenizer.json      the trained tokenizer (Hugging Face format)
  data/               token shards of the train and valid splits
  model.safetensors   weights;  train_state.pt  optimizer, RNG and step, for --resume
  previous/           the checkpoint before the latest, in case the latest is damaged
  metrics.jsonl       one JSON object per log/eval event;  loss.png  the curves
  tensorboard/        the same figures as TensorBoard events, with train.tensorboard
  results.json        final held-out loss and bits per byte;  samples.txt  generated text

Under torchrun every rank runs this function: rank 0 builds the run directory, all ranks train
(train/distributed.py), rank 0 evaluates, samples and writes the results; all return them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.config import Config, DataConfig, ModelConfig, build_config
from lmforge.data import WindowSampler, encode_documents, eval_windows, open_split, write_split
from lmforge.errors import LmforgeError
from lmforge.fileio import write_json, write_text
from lmforge.infer import Sampling, generate
from lmforge.models import Transformer
from lmforge.models.io import load_weights
from lmforge.text import Document, load_corpus
from lmforge.tokenizers import Tokenizer
from lmforge.train import distributed
from lmforge.train.checkpoint import STATE_FILE, has_checkpoint
from lmforge.train.job import PretrainResult, RunDir, launch
from lmforge.train.memory import estimate_memory
from lmforge.train.metrics import (
    TENSORBOARD_DIR,
    MetricsLog,
    add_scalars,
    plot_losses,
    require_tensorboard,
    tensorboard_writer,
)
from lmforge.train.trainer import (
    EarlyStopping,
    MaskedLM,
    Objective,
    Trainer,
    TrainingInterrupted,
    evaluate,
    lm_evaluation,
)


def run_dir_of(cfg: Config) -> RunDir:
    return RunDir(cfg.run_dir, overwrite="--run.overwrite=true", other="--run.name")


def resume_config(run_dir: str | Path, overrides: dict | None = None) -> Config:
    """The config a run was made with, plus `overrides` (e.g. a longer train.max_steps)."""
    saved = RunDir(run_dir, "", "").saved_config()
    if saved is None:
        raise LmforgeError(f"no run to resume at {run_dir} (config.json missing); drop --resume")
    return build_config(saved, overrides)


def train_tokenizer(data: DataConfig, texts: list[str]) -> Tokenizer:
    options = {"pattern": data.pre_tokenizer} if data.tokenizer == "bpe" else {}
    size = None if data.tokenizer == "char" else data.vocab_size
    return Tokenizer.train(texts, data.tokenizer, size, **options)


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
    saved = run_dir_of(cfg).saved_config()
    if saved is None:
        raise LmforgeError(f"{run_dir}/config.json is missing or corrupt; cannot resume this run")
    for section in ("model", "data"):
        now = getattr(cfg, section).model_dump(mode="json")
        if section == "model" and now["vocab_size"] == 0:
            now["vocab_size"] = (saved.get("model") or {}).get("vocab_size")
        before = saved.get(section) or {}
        diff = sorted(k for k in now if now[k] != before.get(k))
        if diff:
            changes = ", ".join(f"{section}.{k}: {before.get(k)!r} -> {now[k]!r}" for k in diff)
            raise LmforgeError(
                f"{run_dir} was made with a different config ({changes}); "
                "resume with the same settings or start a new --run.name"
            )


def _build_run(cfg: Config, log: Callable[[str], None], progress: bool) -> tuple[Config, Tokenizer]:
    """Corpus -> tokenizer -> shards, assembled beside the run directory and moved into place
    only when complete, so bad input never costs an existing run or leaves half a new one."""
    run = run_dir_of(cfg)
    run.check_replaceable(cfg.run.overwrite)  # before minutes of tokenizer training
    train_docs, valid_docs = load_corpus(
        cfg.data.corpus, cfg.data.text_field, cfg.data.invalid_utf8, cfg.data.valid_fraction
    )
    log(f"corpus: {len(train_docs)} train / {len(valid_docs)} valid documents")
    clean_report = None
    if cfg.data.clean:
        from lmforge.text.clean.pipeline import clean_texts

        texts, clean_report = clean_texts(
            [d.text for d in train_docs], cfg.data.clean, sources=[d.source for d in train_docs]
        )
        if not texts:
            raise LmforgeError(
                f"the cleaning recipe '{cfg.data.clean}' removed every training document; "
                "see docs/data.md, or drop data.clean"
            )
        train_docs = [Document(text=t, source="cleaned") for t in texts]
        log(f"cleaned with '{cfg.data.clean}': {len(train_docs)} train documents kept")
    tokenizer = train_tokenizer(cfg.data, [d.text for d in train_docs])
    cfg = cfg.model_copy(update={"model": sized_model_config(cfg.model, tokenizer)})
    with run.staged() as staging:
        tokenizer.save(staging)
        for split, docs in (("train", train_docs), ("valid", valid_docs)):
            info = write_split(
                staging / "data",
                split,
                encode_documents(
                    tokenizer, [d.text for d in docs], f"encoding {split}" if progress else None
                ),
                tokenizer.vocab_size,
                separator=tokenizer.separator_id,
            )
            log(f"{split}: {info.tokens:,} tokens from {info.text_bytes:,} bytes ({info.dtype})")
            if info.tokens < cfg.model.block_size + 2:
                raise LmforgeError(
                    f"the {split} split has {info.tokens} tokens, too few for windows of "
                    f"{cfg.model.block_size}; give more text or lower --model.block_size"
                )
        write_json(staging / "config.json", cfg.model_dump(mode="json"))
        if clean_report is not None:
            write_json(staging / "clean-report.json", clean_report)
    return cfg, tokenizer


def pretrain(
    cfg: Config, resume: bool = False, progress: bool = True, log: Callable[[str], None] = print
) -> PretrainResult:
    """Run the whole job; returns the figures also written to results.json."""
    masked = is_masked_lm(cfg)
    if not masked and (cfg.model.arch != "decoder" or cfg.model.head != "lm"):
        raise LmforgeError(
            f"pretraining trains a causal (model.arch=decoder, model.head=lm) or a masked "
            f"(encoder, mlm) language model, not model.arch={cfg.model.arch} with "
            f"model.head={cfg.model.head}"
        )
    if masked and cfg.data.tokenizer != "wordpiece":
        raise LmforgeError(
            f"masked LM pretraining needs a [MASK] token; data.tokenizer={cfg.data.tokenizer} "
            "has none: use data.tokenizer=wordpiece"
        )
    if cfg.train.tensorboard:  # a missing package fails now, not after the tokenizer
        require_tensorboard()
    started = time.perf_counter()
    job = launch(cfg.train, log, progress)
    device, plan, precision = job.device, job.plan, job.precision
    log, progress = job.log, job.progress
    accumulate = accumulation(cfg, plan.dp)  # before anything is written
    torch.manual_seed(cfg.train.seed)  # the same initial weights and dropout stream on every rank
    run_dir = cfg.run_dir
    if resume:
        if not has_checkpoint(run_dir):
            raise LmforgeError(
                f"nothing to resume in {run_dir} (no {STATE_FILE}); start it again without "
                "--resume, with --run.overwrite=true"
            )
        _check_same_run(run_dir, cfg)
        tokenizer = Tokenizer.load(run_dir)
        cfg = cfg.model_copy(update={"model": sized_model_config(cfg.model, tokenizer)})
    else:
        cfg, tokenizer = distributed.run_on_main(lambda: _build_run(cfg, log, progress))

    train_tokens, _ = open_split(run_dir / "data", "train")
    valid_tokens, _ = open_split(run_dir / "data", "valid")
    token_bytes = torch.tensor(tokenizer.token_bytes())
    model = Transformer(cfg.model).to(device)
    model.checkpoint_activations(cfg.train.activation_checkpointing)
    t = cfg.train.model_copy(update={"parallel": plan.mode, "grad_accum_steps": accumulate})
    tokens_per_step = plan.tokens_per_step(t.batch_size, t.grad_accum_steps, cfg.model.block_size)
    ranks = plan.describe()
    if t.grad_accum_steps > 1:
        ranks = f" in {t.grad_accum_steps} micro-batches{ranks}"
    log(
        f"model: {model.num_parameters():,} parameters, "
        f"{model.flops_per_token() / 1e6:.1f} MFLOPs/token (train); device {device}, {precision}; "
        f"{t.max_steps} steps x {tokens_per_step:,} tokens{ranks}"
    )
    log(estimate_memory(model, t, precision).line(t.optimizer, t.activation_checkpointing))

    # Each rank keeps its slice of the global batch one process would draw (TP: all of it).
    sampler = plan.shard(
        WindowSampler(train_tokens, cfg.model.block_size, t.batch_size * plan.dp, t.seed)
    )
    # only asked-for early stopping costs the best-weights writes and a last evaluation
    monitor = (
        EarlyStopping("loss", patience=t.early_stopping_patience)
        if t.early_stopping_patience
        else None
    )
    if masked:
        mlm = masked_objective(tokenizer, cfg.model.vocab_size, t.seed)
        eval_sampler = WindowSampler(valid_tokens, cfg.model.block_size, t.batch_size, t.seed + 1)
        objective = Objective(
            sampler,
            loss=mlm,
            evaluate=lambda m: mlm.evaluate(
                m, (eval_sampler.batch(i) for i in range(t.eval_batches)), device, precision
            ),
            monitor=monitor,
        )
    else:
        objective = Objective(
            sampler,
            evaluate=lm_evaluation(valid_tokens, token_bytes, sampler, t, device, precision),
            monitor=monitor,
        )
        if cfg.run.eval_sample_tokens and plan.mode in ("none", "ddp"):
            # by rank 0 alone: a sharded (FSDP, TP) model's forward would need every rank
            tokens = cfg.run.eval_sample_tokens
            objective.sample = lambda m: _sample(cfg, m, tokenizer, tokens)
    trainer = Trainer(
        distributed.wrap(model, plan, device),
        t,
        objective,
        run_dir,
        device,
        precision,
        tokens_per_step=tokens_per_step,
        progress=progress,
    )
    try:
        result = trainer.fit(resume)
    except TrainingInterrupted:
        if resume and distributed.is_main():
            run_dir_of(cfg).write_config(cfg.model_dump(mode="json"))
        raise

    def finish() -> PretrainResult:
        whole = model
        if distributed.is_sharded(model):  # FSDP and TP hold pieces: take the checkpoint written
            whole = Transformer(cfg.model).to(device)
            load_weights(whole, run_dir)
        return _finish(
            cfg, whole, tokenizer, valid_tokens, result, resume, device, precision, started
        )

    return distributed.run_on_main(finish)  # rank 0 evaluates and writes; all return the figures


def is_masked_lm(cfg: Config) -> bool:
    return cfg.model.arch == "encoder" and cfg.model.head == "mlm"


def masked_objective(tokenizer: Tokenizer, vocab_size: int, seed: int) -> MaskedLM:
    return MaskedLM(
        tokenizer.token_to_id("[MASK]"),
        vocab_size,
        [tokenizer.token_to_id(s) for s in tokenizer.special_tokens],
        seed,
    )


def accumulation(cfg: Config, data_ranks: int) -> int:
    """Micro-batches per step: what makes train.batch_tokens (in place of grad_accum_steps,
    say a preset's), else train.grad_accum_steps."""
    t = cfg.train
    if not t.batch_tokens:
        return t.grad_accum_steps
    micro = t.batch_size * cfg.model.block_size * data_ranks
    if t.batch_tokens % micro:
        raise LmforgeError(
            f"train.batch_tokens={t.batch_tokens} is not a multiple of the {micro:,} tokens of "
            f"one micro-batch (batch_size {t.batch_size} x block_size {cfg.model.block_size} x "
            f"{data_ranks} data-parallel ranks); use a multiple of it, such as "
            f"{max(1, t.batch_tokens // micro) * micro}, or change batch_size"
        )
    return t.batch_tokens // micro


def _sample(cfg: Config, model, tokenizer: Tokenizer, tokens: int | None = None) -> str:
    prompt = tokenizer.encode(cfg.run.sample_prompt, add_special_tokens=False) or [
        tokenizer.eot_id or 0
    ]
    sampling = Sampling(temperature=cfg.run.sample_temperature, top_k=cfg.run.sample_top_k)
    stop_ids = [i for i in [tokenizer.eot_id] if i is not None]
    tokens = cfg.run.sample_tokens if tokens is None else tokens
    seed = cfg.train.seed  # a generator of its own: the training RNG stays as it was
    [generation] = generate(model, [prompt], tokens, sampling, stop_ids=stop_ids, seed=seed)
    return cfg.run.sample_prompt + tokenizer.decode(generation.ids)


FILL_MASK = ("To be, or not to [MASK], that is the question.", "Good night, sweet [MASK].")


@torch.no_grad()
def fill_mask_sample(model, tokenizer: Tokenizer, device) -> str:
    """A masked LM's sample: its five best words for each [MASK] of a few lines."""
    model.eval()
    lines = []
    for text in FILL_MASK:
        ids = tokenizer.encode(text)
        logits = model(torch.tensor([ids], device=device))[0]
        where = ids.index(tokenizer.token_to_id("[MASK]"))
        best = logits[where].topk(5).indices.tolist()
        lines.append(f"{text} -> {', '.join(tokenizer.id_to_token(i) for i in best)}")
    return "\n".join(lines)


def _finish(cfg, model, tokenizer, valid_tokens, result, resume, device, precision, started):
    """Final held-out evaluation, sample, results.json, samples.txt and loss.png."""
    run_dir, t = cfg.run_dir, cfg.train
    run = run_dir_of(cfg)
    if resume:  # record the settings the run continued with, now that its state has loaded
        run.write_config(cfg.model_dump(mode="json"))
    windows = eval_windows(valid_tokens, cfg.model.block_size, t.batch_size)
    masked = is_masked_lm(cfg)
    if masked:  # no bits per byte: a masked LM scores 15% of the tokens, seeing the rest
        final = masked_objective(tokenizer, cfg.model.vocab_size, t.seed).evaluate(
            model, windows, device, precision
        )
        final["bpb"] = None
    else:
        final = evaluate(model, windows, torch.tensor(tokenizer.token_bytes()), device, precision)
    record = {"event": "final_eval", "step": result.step, "loss": final["loss"]}
    if final["bpb"] is not None:
        record["bpb"] = final["bpb"]
    MetricsLog.append(run_dir / "metrics.jsonl", **record)
    if t.tensorboard:
        writer = tensorboard_writer(run_dir / TENSORBOARD_DIR)
        add_scalars(writer, record)
        writer.close()
    sample = (
        fill_mask_sample(model, tokenizer, device) if masked else _sample(cfg, model, tokenizer)
    )
    summary = PretrainResult(
        steps=result.step,
        stopped_by_time_budget=result.stopped_by_time_budget,
        stopped_early=result.stopped_early,
        best_eval=result.best,
        valid_loss_nats_per_token=final["loss"],
        valid_bits_per_byte=final["bpb"],
        valid_tokens=final["tokens"],
        parameters=model.num_parameters(),
        device=str(device),
        precision=precision,
        minutes=(time.perf_counter() - started) / 60,
        sample=sample,
    )
    run.write_results(summary)
    write_text(run_dir / "samples.txt", sample + "\n")
    plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return summary
