"""The training loop: AdamW, warmup+cosine, clipping, accumulation, periodic evaluation,
early stopping, checkpoints, a time budget, and a clean stop on Ctrl-C.

The loop does not know the objective: a sampler gives the batch of each step and a loss
function turns it into a number. Pretraining passes causal LM windows (the defaults);
fine-tuning (lmforge.tasks) passes task batches, its loss and its validation metric.

Under torchrun the same loop runs on every rank with a model from `distributed.wrap`; the ranks
agree on the logged loss and on when to stop, and only rank 0 writes (train/distributed.py)."""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lmforge.config import TrainConfig
from lmforge.data import WindowSampler
from lmforge.device import autocast, matmul_peak
from lmforge.errors import LmforgeError
from lmforge.train import distributed
from lmforge.train.checkpoint import load_checkpoint, save_best, save_checkpoint
from lmforge.train.losses import IGNORE, causal_lm_loss, mask_tokens, token_loss
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import build_optimizer, lr_at


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C once the checkpoint is safely on disk."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved")
        self.step = step


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    stopped_by_budget: bool
    stopped_early: bool = False  # the validation metric stopped improving
    best: dict | None = None  # the best evaluation so far and its step, with a monitor


@dataclass
class EarlyStopping:
    """Watches one validation metric: the best value, its step, and how many evaluations in a
    row failed to beat it. With `patience` > 0 the run stops after that many."""

    metric: str = "loss"
    higher_is_better: bool = False
    patience: int = 0
    best: float | None = None
    best_step: int = 0
    bad_evals: int = 0

    def update(self, step: int, result: dict) -> bool:
        """Record an evaluation; True when it is the best so far."""
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            raise LmforgeError(f"evaluation gave no finite '{self.metric}' to monitor: {result}")
        better = self.best is None or (
            value > self.best if self.higher_is_better else value < self.best
        )
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return 0 < self.patience <= self.bad_evals


def lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Pretraining's objective: the next-token loss of a window."""
    x, y = batch
    return causal_lm_loss(model(x), y)


class CompiledOrEager(torch.nn.Module):
    """`torch.compile(model)`, and `model` itself from the first call that fails to compile
    (no C++ compiler, an unsupported operation), with a warning: training goes on eagerly."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.compiled = model, torch.compile(model)

    def forward(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # compilation runs on the first calls
                warnings.warn(
                    f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    "training goes on without it",
                    stacklevel=2,
                )
                self.compiled = None
        return self.model(*args, **kwargs)


class MaskedLM:
    """BERT's objective on a window: corrupt 15% of the non-special tokens (80/10/10, see
    losses.mask_tokens) and predict the originals. `seed` fixes the corruption, so repeated
    evaluations score the same positions; without it training draws from the global RNG,
    whose state the checkpoint saves."""

    def __init__(self, mask_id: int, vocab_size: int, special_ids: list[int], seed=None):
        self.mask_id, self.vocab_size, self.seed = mask_id, vocab_size, seed
        self.special_ids = torch.tensor(special_ids, dtype=torch.long)

    def corrupt(self, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        special = torch.isin(x, self.special_ids.to(x.device))
        return mask_tokens(x, self.mask_id, self.vocab_size, special, generator=generator)

    def __call__(self, model: torch.nn.Module, batch) -> torch.Tensor:
        inputs, labels = self.corrupt(batch[0])
        return token_loss(model(inputs), labels)

    @torch.no_grad()
    def evaluate(self, model, batches, device, precision: str = "fp32") -> dict[str, float]:
        """Mean loss (nats) per corrupted token, the same positions every call."""
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=device).manual_seed(self.seed or 0)
        nats, count = 0.0, 0
        for x, _ in batches:
            inputs, labels = self.corrupt(x.to(device), generator)
            with autocast(device, precision):
                logits = model(inputs)
            nats += token_loss(logits, labels, reduction="sum").item()
            count += int((labels != IGNORE).sum())
        model.train(was_training)
        return {"loss": nats / count if count else float("nan"), "tokens": count}


def to_device(batch, device: torch.device):
    """Move a batch (a tensor, or a tuple or dict of them) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(v, device) for v in batch)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    token_bytes: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    """Mean loss (nats/token) and bits per byte over `batches`.

    Bits per byte = total nats / ln 2 / UTF-8 bytes of the predicted tokens; tokens with no
    bytes (end-of-text and other specials) are left out of both sums, so the figure does not
    depend on how the text was tokenized.
    """
    was_training = model.training
    model.eval()
    nats = bytes_ = 0.0
    tokens = 0
    token_bytes = token_bytes.to(device)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            logits = model(x)
        loss = causal_lm_loss(logits, y, reduction="none").reshape(-1)
        nbytes = token_bytes[y.reshape(-1)]
        counted = nbytes > 0
        nats += loss[counted].sum().item()
        bytes_ += nbytes.sum().item()
        tokens += int(counted.sum().item())
    model.train(was_training)
    if tokens == 0:
        return {"loss": float("nan"), "bpb": float("nan"), "tokens": 0}
    return {"loss": nats / tokens, "bpb": nats / math.log(2) / bytes_, "tokens": tokens}


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts, except
    while a checkpoint is being written, when it waits for the write to finish."""

    def __init__(self):
        self.requested = False
        self.saving = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested and not self.saving:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    sampler: WindowSampler,
    valid_tokens: np.ndarray | None,
    token_bytes: torch.Tensor | None,
    run_dir: str | Path,
    device: torch.device,
    precision: str,
    resume: bool = False,
    progress: bool = True,
    *,
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor] = lm_loss,
    evaluate_fn: Callable[[torch.nn.Module], dict] | None = None,
    monitor: EarlyStopping | None = None,
    sample_fn: Callable[[torch.nn.Module], str] | None = None,
) -> TrainResult:
    """Train `model` in place up to cfg.max_steps, checkpointing into `run_dir`.

    `sampler.batch(step, micro)` gives each micro-batch and `loss_fn(model, batch)` its loss.
    `evaluate_fn(model)` returns the validation figures (default: LM loss and bits per byte
    on `valid_tokens`). A `monitor` watches one of them: the best weights so far are kept in
    best.safetensors, and with a patience the run stops once the metric stops improving.
    `sample_fn(model)`, text the model generates, is shown and logged at each periodic
    evaluation (by rank 0, on the unwrapped model; it must leave the global RNG alone).
    Under torchrun, `model` is already wrapped for `cfg.parallel` and `sampler` yields this
    rank's share of each batch; every rank calls this."""
    run_dir = Path(run_dir)
    main = distributed.is_main()
    optimizer = build_optimizer(model, cfg, device)
    state = load_checkpoint(run_dir, model, optimizer) if resume else {}
    start = state.get("step", 0)
    if monitor is not None and "monitor" in state:
        for key, value in state["monitor"].items():
            setattr(monitor, key, value)
    log = (
        MetricsLog(
            run_dir / "metrics.jsonl",
            resume_step=start if resume else None,
            tensorboard=cfg.tensorboard,
        )
        if main
        else None
    )
    forward = CompiledOrEager(model) if cfg.compile else model
    if evaluate_fn is None:
        eval_sampler = WindowSampler(
            valid_tokens, sampler.block_size, sampler.batch_size, cfg.seed + 1
        )
    tokens_per_step = distributed.tokens_per_step(cfg, sampler.block_size)
    # model FLOPs utilisation: the model's matmul FLOPs over what the processes' matmuls reach
    flops_per_token = getattr(distributed.unwrap(model), "flops_per_token", lambda: 0)()
    peak = matmul_peak(device, precision) * distributed.world_size()

    def write(**record) -> None:
        if log is not None:
            log.write(**record)

    last_eval = -1

    def run_eval(step: int) -> dict:
        nonlocal last_eval
        last_eval = step
        # Every rank evaluates (FSDP and TP forwards need them all); rank 0 logs.
        if evaluate_fn is None:
            batches = (eval_sampler.batch(i) for i in range(cfg.eval_batches))
            result = evaluate(forward, batches, token_bytes, device, precision)
        else:
            result = evaluate_fn(forward)
        figures = {k: v for k, v in result.items() if isinstance(v, int | float)}
        write(event="eval", step=step, **figures)
        if monitor is not None and monitor.update(step, result):
            stop.saving = True
            save_best(run_dir, model, step)
            stop.saving = False
        return result

    saved_step = start  # of the checkpoint on disk (0: none)

    def checkpoint(step: int) -> None:
        nonlocal saved_step
        stop.saving = True
        # The training time so far travels with the checkpoint: a time budget spans resumes.
        elapsed = time.perf_counter() - started
        extra = {"elapsed_s": elapsed}
        if monitor is not None:
            extra["monitor"] = asdict(monitor)
        save_checkpoint(run_dir, model, optimizer, step, extra)
        saved_step = step
        stop.saving = False

    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    started = time.perf_counter() - state.get("elapsed_s", 0.0)
    stopped_by_budget = stopped_early = False
    bar = tqdm(
        total=cfg.max_steps,
        initial=start,
        disable=not (progress and main),
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    model.train()
    step = start
    stop = _StopFlag()
    with stop:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            # Under a time budget the schedule follows whichever runs out first, steps or
            # minutes, so the learning rate has decayed by the time the budget stops the run.
            time_step = int((t0 - started) / budget * cfg.max_steps)
            if cfg.max_minutes:  # every rank follows the same clock: the one furthest along
                time_step = int(distributed.max_over_ranks(time_step)[0])
            lr = lr_at(max(step, time_step), cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.grad_accum_steps):
                batch = to_device(sampler.batch(step, micro), device)
                with distributed.gradient_sync(model, micro == cfg.grad_accum_steps - 1):
                    with autocast(device, precision):
                        loss = loss_fn(forward, batch)
                    (loss / cfg.grad_accum_steps).backward()
                loss_sum += loss.item()
            # the mean over the global batch, the same figure on every rank
            loss_value = distributed.mean_over_ranks(loss_sum / cfg.grad_accum_steps)
            if not math.isfinite(loss_value):  # stop before the update spoils the weights
                last = (
                    f"the last checkpoint, of step {saved_step}, is in {run_dir}"
                    if saved_step
                    else "no checkpoint was written yet"
                )
                raise LmforgeError(
                    f"training loss became {loss_value} at step {step + 1}; {last}: lower "
                    "--train.learning_rate and resume with --resume (or start again)"
                )
            if cfg.grad_clip > 0:
                grad_norm = distributed.clip_grad_norm(model, cfg.grad_clip)
            else:
                grad_norm = float("nan")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            tokens_per_s = tokens_per_step / dt
            mfu = tokens_per_s * flops_per_token / peak
            if step % cfg.log_interval == 0 or step == cfg.max_steps:
                write(
                    event="train",
                    step=step,
                    loss=loss_value,
                    lr=lr,
                    grad_norm=grad_norm,
                    tokens_per_s=tokens_per_s,
                    mfu=mfu,
                )
            bar.set_postfix(
                loss=f"{loss_value:.3f}",
                lr=f"{lr:.2e}",
                tok_s=f"{tokens_per_s:,.0f}",
                mfu=f"{mfu:.0%}",
                refresh=False,
            )
            bar.update(1)
            # Ranks stop together: a Ctrl-C or the clock seen by one of them stops them all.
            out_of_time = time.perf_counter() - started > budget
            stop_requested, out_of_time = map(
                bool, distributed.max_over_ranks(stop.requested, out_of_time)
            )
            if step % cfg.eval_interval == 0 and step < cfg.max_steps and not out_of_time:
                result = run_eval(step)
                if main:
                    shown = ", ".join(
                        f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)
                    )
                    bar.write(f"step {step}: valid {shown}")
                    if sample_fn is not None:
                        text = sample_fn(distributed.unwrap(model))
                        write(event="sample", step=step, text=text)
                        bar.write(f"step {step}: sample {text!r}")
                checkpoint(step)
                if monitor is not None and monitor.should_stop:
                    if main:
                        bar.write(
                            f"early stop: valid {monitor.metric} has not improved on "
                            f"{monitor.best:.4f} (step {monitor.best_step}) for "
                            f"{monitor.bad_evals} evaluations"
                        )
                    stopped_early = True
                    break
            if stop_requested:
                checkpoint(step)
                bar.close()
                raise TrainingInterrupted(step)
            if out_of_time:
                if main:
                    bar.write(f"time budget of {cfg.max_minutes} min reached at step {step}")
                stopped_by_budget = True
                break
    bar.close()
    if monitor is not None and last_eval != step:
        run_eval(step)  # the last steps may hold the best weights
    checkpoint(step)
    best = None
    if monitor is not None:
        best = {"step": monitor.best_step, monitor.metric: monitor.best}
    return TrainResult(step, stopped_by_budget, stopped_early, best)
