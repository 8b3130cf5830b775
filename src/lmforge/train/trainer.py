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
    stopped_by_time_budget: bool
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


@dataclass
class Objective:
    """What a run trains for: `sampler.batch(step, micro)` gives each micro-batch,
    `loss(model, batch)` its loss, `evaluate(model)` the validation figures, `monitor`
    watches one of them (the best weights go to best.safetensors; with a patience the run
    stops once it stops improving), and `sample(model)` is text generated at each periodic
    evaluation (by rank 0, on the unwrapped model; it must leave the global RNG alone)."""

    sampler: object
    evaluate: Callable[[torch.nn.Module], dict]
    loss: Callable[[torch.nn.Module, object], torch.Tensor] = lm_loss
    monitor: EarlyStopping | None = None
    sample: Callable[[torch.nn.Module], str] | None = None


def lm_evaluation(
    valid_tokens: np.ndarray,
    token_bytes: torch.Tensor,
    sampler,
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
) -> Callable[[torch.nn.Module], dict]:
    """Pretraining's periodic evaluation: LM loss and bits per byte on cfg.eval_batches
    windows of the validation tokens, the same windows every time."""
    windows = WindowSampler(valid_tokens, sampler.block_size, sampler.batch_size, cfg.seed + 1)

    def run(model: torch.nn.Module) -> dict:
        batches = (windows.batch(i) for i in range(cfg.eval_batches))
        return evaluate(model, batches, token_bytes, device, precision)

    return run


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, training seconds so far (a time budget spans
    resumes), the step of the checkpoint on disk and of the last evaluation, and the
    monitor's record. `state_dict` is what travels with each checkpoint."""

    step: int = 0
    elapsed: float = 0.0
    saved_step: int = 0
    last_eval: int = -1
    monitor: EarlyStopping | None = None

    def state_dict(self) -> dict:
        state = {"elapsed_s": self.elapsed}
        if self.monitor is not None:
            state["monitor"] = asdict(self.monitor)
        return state

    def load_state_dict(self, state: dict) -> None:
        """From a loaded checkpoint (`load_checkpoint`'s dict, with its 'step')."""
        self.step = self.saved_step = state.get("step", 0)
        self.elapsed = state.get("elapsed_s", 0.0)
        if self.monitor is not None and "monitor" in state:
            for key, value in state["monitor"].items():
                setattr(self.monitor, key, value)


class NonFiniteLoss(ArithmeticError):
    """The loss of a step was inf or nan; raised before the update touches the weights."""

    def __init__(self, value: float):
        super().__init__(f"training loss became {value}")
        self.value = value


@dataclass
class StepOutcome:
    loss: float  # the mean over the global batch, the same on every rank
    grad_norm: float  # before clipping; nan without clipping
    lr: float  # the learning rate the step used


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable,
    *,
    lr: float,
    device: torch.device,
    precision: str = "fp32",
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor] = lm_loss,
    grad_clip: float = 0.0,
    forward: torch.nn.Module | None = None,
) -> StepOutcome:
    """One optimizer step: set the learning rate, accumulate the gradients of the
    micro-batches (synchronised across ranks on the last), check the loss is finite, clip,
    step and clear. `forward` (the model compiled, say) computes the losses; `model` is
    what DDP/FSDP wrapped and the optimizer holds."""
    forward = model if forward is None else forward
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    batches = list(micro_batches)
    loss_sum = 0.0
    for i, batch in enumerate(batches):
        batch = to_device(batch, device)
        with distributed.gradient_sync(model, i == len(batches) - 1):
            with autocast(device, precision):
                loss = loss_fn(forward, batch)
            (loss / len(batches)).backward()
        loss_sum += loss.item()
    loss_value = distributed.mean_over_ranks(loss_sum / len(batches))
    if not math.isfinite(loss_value):  # stop before the update spoils the weights
        raise NonFiniteLoss(loss_value)
    grad_norm = distributed.clip_grad_norm(model, grad_clip) if grad_clip > 0 else float("nan")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(loss_value, grad_norm, lr)


class Trainer:
    """The loop over `train_step`: the schedule (steps or the clock, whichever runs out
    first), logging, periodic evaluation and checkpoints, early stopping, the time budget
    and a clean stop on Ctrl-C. Under torchrun, `model` is already wrapped for
    cfg.parallel and the objective's sampler yields this rank's share of each batch;
    every rank runs the loop, rank 0 alone logs and writes."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        objective: Objective,
        run_dir: str | Path,
        device: torch.device,
        precision: str,
        *,
        tokens_per_step: int,
        progress: bool = True,
    ):
        self.model, self.cfg, self.objective = model, cfg, objective
        self.run_dir, self.device, self.precision = Path(run_dir), device, precision
        self.tokens_per_step, self.progress = tokens_per_step, progress
        self.main = distributed.is_main()
        self.optimizer = build_optimizer(model, cfg, device)
        self.forward = CompiledOrEager(model) if cfg.compile else model
        self.state = TrainState(monitor=objective.monitor)
        # model FLOPs utilisation: the model's matmul FLOPs over what the processes reach
        self.flops_per_token = getattr(distributed.unwrap(model), "flops_per_token", lambda: 0)()
        self.peak = matmul_peak(device, precision) * distributed.world_size()
        self.budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
        self.log: MetricsLog | None = None
        self.stop = _StopFlag()

    # ------------------------------------------------------------ pieces of the loop

    def write(self, **record) -> None:
        if self.log is not None:
            self.log.write(**record)

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def lr(self) -> float:
        """The schedule at this step; under a time budget it follows whichever runs out
        first, steps or minutes, so the rate has decayed by the time the budget stops the
        run. Every rank follows the same clock: the one furthest along."""
        cfg, step = self.cfg, self.state.step
        time_step = int(self.elapsed() / self.budget * cfg.max_steps)
        if cfg.max_minutes:
            time_step = int(distributed.max_over_ranks(time_step)[0])
        return lr_at(max(step, time_step), cfg)

    def step_once(self) -> StepOutcome:
        cfg, step = self.cfg, self.state.step
        lr = self.lr()
        micro = (self.objective.sampler.batch(step, m) for m in range(cfg.grad_accum_steps))
        try:
            outcome = train_step(
                self.model,
                self.optimizer,
                micro,
                lr=lr,
                device=self.device,
                precision=self.precision,
                loss_fn=self.objective.loss,
                grad_clip=cfg.grad_clip,
                forward=self.forward,
            )
        except NonFiniteLoss as e:
            saved = self.state.saved_step
            last = (
                f"the last checkpoint, of step {saved}, is in {self.run_dir}"
                if saved
                else "no checkpoint was written yet"
            )
            raise LmforgeError(
                f"training loss became {e.value} at step {step + 1}; {last}: lower "
                "--train.learning_rate and resume with --resume (or start again)"
            ) from None
        return outcome

    def evaluate(self) -> dict:
        """The objective's evaluation on every rank (FSDP and TP forwards need them all);
        rank 0 logs it. A new best of the monitored metric saves the best weights."""
        step, monitor = self.state.step, self.state.monitor
        self.state.last_eval = step
        result = self.objective.evaluate(self.forward)
        figures = {k: v for k, v in result.items() if isinstance(v, int | float)}
        self.write(event="eval", step=step, **figures)
        if monitor is not None and monitor.update(step, result):
            self.stop.saving = True
            save_best(self.run_dir, self.model, step)
            self.stop.saving = False
        return result

    def checkpoint(self) -> None:
        self.stop.saving = True
        self.state.elapsed = self.elapsed()
        save_checkpoint(
            self.run_dir, self.model, self.optimizer, self.state.step, self.state.state_dict()
        )
        self.state.saved_step = self.state.step
        self.stop.saving = False

    def maybe_evaluate(self, out_of_time: bool) -> bool:
        """At each eval_interval (but not the last step, evaluated by the job, nor once out
        of time): evaluate, show a sample, checkpoint. True when early stopping says stop."""
        step, cfg, monitor = self.state.step, self.cfg, self.state.monitor
        if step % cfg.eval_interval or step >= cfg.max_steps or out_of_time:
            return False
        result = self.evaluate()
        if self.main:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            self.bar.write(f"step {step}: valid {shown}")
            if self.objective.sample is not None:
                text = self.objective.sample(distributed.unwrap(self.model))
                self.write(event="sample", step=step, text=text)
                self.bar.write(f"step {step}: sample {text!r}")
        self.checkpoint()
        if monitor is None or not monitor.should_stop:
            return False
        if self.main:
            self.bar.write(
                f"early stop: valid {monitor.metric} has not improved on {monitor.best:.4f} "
                f"(step {monitor.best_step}) for {monitor.bad_evals} evaluations"
            )
        return True

    def should_stop(self) -> tuple[bool, bool]:
        """(Ctrl-C was pressed, the time budget is spent), agreed by all ranks: what one of
        them sees stops them all."""
        out_of_time = self.elapsed() > self.budget
        requested, out_of_time = map(
            bool, distributed.max_over_ranks(self.stop.requested, out_of_time)
        )
        return requested, out_of_time

    def log_step(self, outcome: StepOutcome, seconds: float) -> None:
        cfg, step = self.cfg, self.state.step
        tokens_per_s = self.tokens_per_step / seconds
        mfu = tokens_per_s * self.flops_per_token / self.peak
        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            self.write(
                event="train",
                step=step,
                loss=outcome.loss,
                lr=outcome.lr,
                grad_norm=outcome.grad_norm,
                tokens_per_s=tokens_per_s,
                mfu=mfu,
            )
        self.bar.set_postfix(
            loss=f"{outcome.loss:.3f}",
            lr=f"{outcome.lr:.2e}",
            tok_s=f"{tokens_per_s:,.0f}",
            mfu=f"{mfu:.0%}",
            refresh=False,
        )
        self.bar.update(1)

    # ------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to cfg.max_steps (from the checkpoint in run_dir with `resume`)."""
        cfg, state = self.cfg, self.state
        if resume:
            state.load_state_dict(load_checkpoint(self.run_dir, self.model, self.optimizer))
        start = state.step
        if self.main:
            self.log = MetricsLog(
                self.run_dir / "metrics.jsonl",
                resume_step=start if resume else None,
                tensorboard=cfg.tensorboard,
            )
        self._started = time.perf_counter() - state.elapsed
        self.bar = tqdm(
            total=cfg.max_steps,
            initial=start,
            disable=not (self.progress and self.main),
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        stopped_by_budget = stopped_early = False
        self.model.train()
        with self.stop:
            while state.step < cfg.max_steps:
                t0 = time.perf_counter()
                outcome = self.step_once()
                state.step += 1
                self.log_step(outcome, time.perf_counter() - t0)
                requested, out_of_time = self.should_stop()
                if self.maybe_evaluate(out_of_time):
                    stopped_early = True
                    break
                if requested:
                    self.checkpoint()
                    self.bar.close()
                    raise TrainingInterrupted(state.step)
                if out_of_time:
                    if self.main:
                        self.bar.write(
                            f"time budget of {cfg.max_minutes} min reached at step {state.step}"
                        )
                    stopped_by_budget = True
                    break
        self.bar.close()
        monitor = state.monitor
        if monitor is not None and state.last_eval != state.step:
            self.evaluate()  # the last steps may hold the best weights
        self.checkpoint()
        best = (
            None if monitor is None else {"step": monitor.best_step, monitor.metric: monitor.best}
        )
        return TrainResult(state.step, stopped_by_budget, stopped_early, best)
