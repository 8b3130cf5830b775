"""Continuous batching: many requests share one decode step, joining and leaving as they go.

Static batching (`generate` with several prompts) starts a batch together and ends it when
its longest member ends; a request that arrives meanwhile waits for the whole batch. Here
the unit of work is one *step*, one forward pass over a row of mixed tokens:

    [ newest token of running sequence 0 .. n-1 | prompt piece of a joining request | ... ]

    1. every running sequence contributes its newest token; waiting requests contribute
       the next pieces of their prompts, up to `prefill_chunk` prompt tokens per step over
       all of them (a long prompt goes in over several steps);
    2. the whole row goes through the model at once: one matmul per weight for all its
       tokens. Decode tokens alone are bound by reading the weights, so the prompt pieces
       ride along almost free, where a separate prefill pass would read every weight again
       and stall the running sequences for it (p99 inter-token latency, benchmarks/serve.py);
       the attention alone is per sequence (`_StepLayer.attend`): a decode token sees its
       own slot's keys, a prompt piece its own earlier pieces, causally;
    3. each running row chooses its next token with its own settings (`Sampling`, seed,
       stop ids, log-probabilities); a request whose prompt is now complete chooses its
       first token from its last prompt position and joins the running batch; a sequence
       that finishes, or is cancelled, leaves at once and its KV slot is free.

With a `decode_model` in another precision (lmforge.infer.precision's `mixed`), the prompt
pieces and the decode tokens go through their own models, in two passes per step.

KV slots. `SlotCache` holds every layer's keys and values in one buffer of
(slots, kv_heads, capacity, head_dim). The running sequences occupy slots 0..n-1, so a
step's keys are the view [:n, :, :width] (width = the longest sequence + 1), no copy; a
row's own length masks the keys past its end. When a sequence leaves, the last running
one moves into its slot (one copy of its cached positions), which keeps the rows packed.
The time axis grows by doubling, up to the model's context, so a server with 16 slots
does not hold 16 full contexts until it needs them. Buffers start as zeros: masked keys
then hold finite values, which the attention weighs with an exact 0.

Exactness. A row's computation does not depend on the other rows: its attention sees only
its own keys, its positions are its own, and its sampling has its own generator (seeded per
request). So greedy text is the same whether a
request runs alone or among others (tests/infer/test_batching.py); the logits may differ in
the last bits where a batched matmul sums in another order.

Threads. `Scheduler.step()` does one step and can be called directly (tests do);
`start()` runs steps on a background thread that sleeps while there is no work, and
`submit()`, `Sequence.cancel()` and `stop()` are safe from any thread. Callbacks
(`on_token`, `on_finish`) run on the scheduler's thread and must be quick.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch

from lmforge.errors import LmforgeError
from lmforge.infer.generate import StaticCache
from lmforge.infer.sampling import Sampling
from lmforge.nn.attention import attention
from lmforge.nn.cache import KVCache, LayerCache

GREEDY = Sampling(temperature=0)


@dataclass
class TokenChoice:
    """One chosen token: its id, and when asked for, its log-probability under the model
    (before penalties and filters) and the `top` most likely (id, log-probability) pairs."""

    id: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Request:
    """What one sequence asks for. `on_token(sequence, choice)` sees each token as it is
    chosen and returns True to end the sequence there (a stop string, say; the token is
    kept). `penalize_prompt` counts the prompt's tokens in the penalties (as `generate`
    does) or only the generated ones (OpenAI's API). `logit_bias` {id: bias} is added to
    the logits before the choice (-100 bans a token in practice, +100 forces it); reported
    log-probabilities stay the model's own. `prompt_logprobs` scores the prompt itself:
    `Sequence.prompt_choices` gets each prompt token's log-probability given the tokens
    before it (None for the first), with the `top_logprobs` most likely; then
    max_new_tokens may be 0 (scoring without generating)."""

    prompt: list[int]
    max_new_tokens: int = 64
    sampling: Sampling = GREEDY
    seed: int | None = None
    stop_ids: Seq[int] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    penalize_prompt: bool = True
    logit_bias: dict[int, float] | None = None
    prompt_logprobs: bool = False
    on_token: Callable[[Sequence, TokenChoice], bool] | None = None
    on_finish: Callable[[Sequence], None] | None = None


class Sequence:
    """A request in the scheduler: its tokens so far, and how it ended.

    finish_reason: "stop" (a stop id, or on_token said stop), "length" (max_new_tokens or
    the model's context), "cancelled", or "error" (see `error`)."""

    _ids = itertools.count()

    def __init__(self, request: Request, device: torch.device):
        self.id = next(Sequence._ids)
        self.request = request
        self.ids: list[int] = []
        self.choices: list[TokenChoice] = []
        self.prompt_choices: list[TokenChoice] = []  # with request.prompt_logprobs
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.cancelled = False
        self.generator = torch.Generator(device=device)
        if request.seed is not None:
            self.generator.manual_seed(request.seed)
        else:
            self.generator.seed()
        self.prefilled = 0  # prompt tokens already in the cache
        self.scratch: StaticCache | None = None  # the cache of a prefill in progress
        self.logits: torch.Tensor | None = None  # after the newest token

    @property
    def length(self) -> int:
        """Tokens in the KV cache: the prompt and every generated token but the newest."""
        return len(self.request.prompt) + max(len(self.ids) - 1, 0)

    def cancel(self) -> None:
        """End it at the next step (from any thread); its slot is freed then."""
        self.cancelled = True

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class _SlotLayer(LayerCache):
    """One layer's slots. A decode step writes each row's new key at that row's own
    length and returns the packed rows' keys up to the step's width."""

    def __init__(self, cache: SlotCache):
        super().__init__()
        self.cache = cache

    @property
    def length(self) -> int:
        return self.cache.width - 1

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cache
        n = k.size(0)
        self.k[c.rows, :, c.columns] = k[:, :, 0].to(self.k.dtype)
        self.v[c.rows, :, c.columns] = v[:, :, 0].to(self.v.dtype)
        return self.k[:n, :, : c.width], self.v[:n, :, : c.width]


class SlotCache(KVCache):
    """Keys and values of up to `slots` sequences, rows packed from slot 0."""

    def __init__(self, slots: int, max_capacity: int, start_capacity: int = 128):
        super().__init__()
        self.slots = slots
        self.max_capacity = max_capacity
        self.capacity = min(start_capacity, max_capacity)
        self.width = 1  # of the current decode step: longest length + 1
        self.columns: torch.Tensor | None = None  # each row's write position this step
        self.rows: torch.Tensor | None = None  # 0..n-1, the step's rows

    def layer(self, i: int) -> LayerCache:
        return self.layers[i]

    def _allocate(self, like: StaticCache) -> None:
        self.layers = []
        for src in like.layers:
            layer = _SlotLayer(self)
            shape = (self.slots, src.k.size(1), self.capacity, src.k.size(3))
            layer.k = src.k.new_zeros(shape)
            layer.v = src.v.new_zeros(shape)
            self.layers.append(layer)

    def reserve(self, length: int) -> None:
        """Room for `length` positions per slot: the time axis doubles until it fits."""
        if length <= self.capacity or not self.layers:
            self.capacity = max(self.capacity, min(length, self.max_capacity))
            return
        new = self.capacity
        while new < length:
            new *= 2
        new = min(new, self.max_capacity)
        for layer in self.layers:
            for name in ("k", "v"):
                old = getattr(layer, name)
                grown = old.new_zeros((*old.shape[:2], new, old.size(3)))
                grown[:, :, : old.size(2)] = old
                setattr(layer, name, grown)
        self.capacity = new

    def put(self, slot: int, scratch: StaticCache, length: int) -> None:
        """Copy a prefilled sequence's cache into `slot`."""
        if not self.layers:
            self._allocate(scratch)
        self.reserve(length + 1)
        for layer, src in zip(self.layers, scratch.layers):
            layer.k[slot, :, :length] = src.k[0, :, :length]
            layer.v[slot, :, :length] = src.v[0, :, :length]

    def move(self, src: int, dst: int, length: int) -> None:
        for layer in self.layers:
            layer.k[dst, :, :length] = layer.k[src, :, :length]
            layer.v[dst, :, :length] = layer.v[src, :, :length]


class _StepLayer(LayerCache):
    """One layer of a mixed step: splits the row of queries, keys and values by sequence
    and attends within each (the `attend` hook of lmforge.nn.cache)."""

    def __init__(self, step: _StepCache, i: int):
        super().__init__()
        self.step, self.i = step, i

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        step, n = self.step, self.step.decoding
        out = []
        if n:  # one query per running sequence, against its slot: (n, heads, 1, head_dim)
            keys, values = step.slots.layers[self.i].append(
                k[0, :, :n].transpose(0, 1)[:, :, None], v[0, :, :n].transpose(0, 1)[:, :, None]
            )
            qd = q[0, :, :n].transpose(0, 1)[:, :, None].to(keys.dtype)
            heads = attention(qd, keys, values, mask=step.mask)
            out.append(heads[:, :, 0].transpose(0, 1)[None])
        for scratch, a, b in step.pieces:  # a prompt piece, causal over its cached prefix
            keys, values = scratch.layer(self.i).append(k[:, :, a:b], v[:, :, a:b])
            out.append(attention(q[:, :, a:b].to(keys.dtype), keys, values, causal=True))
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]


class _StepCache(KVCache):
    """The cache of one mixed step: `decoding` running sequences (their slots in `slots`,
    each attending up to its own length: `mask`), then prompt `pieces` (scratch cache,
    start, end) at those positions of the row."""

    def __init__(self, slots: SlotCache, decoding: int, mask, pieces):
        super().__init__()
        self.slots, self.decoding, self.mask, self.pieces = slots, decoding, mask, pieces

    def layer(self, i: int) -> LayerCache:
        while len(self.layers) <= i:
            self.layers.append(_StepLayer(self, len(self.layers)))
        return self.layers[i]

    @property
    def length(self) -> int:
        return 0  # positions are given per token


class Scheduler:
    """Runs requests on `model` with continuous batching; `decode_model` (the same model in
    another precision, lmforge.infer.precision) runs the decode steps if given.

    max_batch        sequences decoding together (KV slots); more requests wait
    prefill_chunk    prompt tokens prefilled per step, over all waiting requests
    """

    def __init__(
        self,
        model: torch.nn.Module,
        max_batch: int = 8,
        prefill_chunk: int = 64,
        decode_model: torch.nn.Module | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ):
        if model.config.arch != "decoder":
            raise LmforgeError(
                f"continuous batching serves decoder-only models; this one is "
                f"'{model.config.arch}' (embed encoders instead)"
            )
        if model.config.head != "lm":
            raise LmforgeError(
                f"this model has a '{model.config.head}' head; generation needs a "
                "language-model head"
            )
        if max_batch < 1 or prefill_chunk < 1:
            raise LmforgeError("max_batch and prefill_chunk must be at least 1")
        self.model = model.eval()
        self.decode_model = (decode_model or model).eval()
        self.device = next(model.parameters()).device
        self.context = model.config.block_size
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.on_step = on_step  # (running sequences, waiting) after each step, failed ones too
        self.cache = SlotCache(max_batch, self.context)
        self.running: list[Sequence] = []  # slot i holds running[i]
        self.waiting: deque[Sequence] = deque()  # not yet fully prefilled
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0
        self.batch_sizes: list[int] = []  # of each decode step (bounded: last 10_000)

    # -- submitting -------------------------------------------------------------------

    def submit(self, request: Request) -> Sequence:
        if not request.prompt:
            raise LmforgeError("the prompt is empty after tokenization; give some text")
        if len(request.prompt) >= self.context:
            raise LmforgeError(
                f"the prompt has {len(request.prompt)} tokens but the model's context is "
                f"{self.context}, which leaves no room to answer; shorten it"
            )
        if request.max_new_tokens < 0:
            raise LmforgeError(f"max_new_tokens must be >= 0 (got {request.max_new_tokens})")
        vocab = self.model.config.vocab_size
        if any(not 0 <= int(i) < vocab for i in request.logit_bias or ()):
            raise LmforgeError(f"logit_bias keys must be token ids in [0, {vocab})")
        seq = Sequence(request, self.device)
        with self._lock:
            self.waiting.append(seq)
            self._lock.notify()
        return seq

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    # -- the step ---------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """One step: the running sequences' next tokens and the waiting prompts' next pieces,
        in one forward pass (two with a separate decode model)."""
        with self._lock:
            waiting = list(self.waiting)
        for seq in [s for s in self.running if s.cancelled]:
            self._finish(seq, "cancelled")
        for seq in [s for s in waiting if s.cancelled]:
            self._finish(seq, "cancelled")
        pieces = self._pieces()
        rows = list(self.running)
        if self.decode_model is self.model:
            if rows or pieces:
                self._forward(self.model, rows, pieces)
        else:  # mixed precision: the prompt through `model`, the decode through its copy
            if pieces:
                self._forward(self.model, [], pieces)
            if rows:
                self._forward(self.decode_model, rows, [])
        self.steps += 1
        if self.on_step is not None:
            self.on_step(len(self.running), len(self.waiting))

    def _pieces(self) -> list[tuple[Sequence, int]]:
        """(waiting sequence, prompt tokens it feeds this step), first come first served,
        within the chunk, the context (the step's row is one sequence to the model) and the
        free slots (a request whose prompt completes joins the batch)."""
        budget = min(self.prefill_chunk, self.context - len(self.running))
        free = self.max_batch - len(self.running)
        pieces = []
        with self._lock:
            queue = list(self.waiting)
        for seq in queue:
            if budget <= 0 or len(pieces) >= free:
                break
            if seq.request.max_new_tokens == 0 and not seq.request.prompt_logprobs:
                self._finish(seq, "length")
                continue
            take = min(budget, len(seq.request.prompt) - seq.prefilled)
            pieces.append((seq, take))
            budget -= take
        return pieces

    def _forward(self, model, rows: list[Sequence], pieces: list[tuple[Sequence, int]]) -> None:
        n = len(rows)
        ids, positions, spans = [s.ids[-1] for s in rows], [s.length for s in rows], []
        mask = None
        if n:
            lengths = torch.tensor(positions, device=self.device)
            width = int(lengths.max()) + 1
            self.cache.reserve(width)
            self.cache.width = width
            self.cache.columns = lengths
            self.cache.rows = torch.arange(n, device=self.device)
            mask = (torch.arange(width, device=self.device)[None, :] <= lengths[:, None])[
                :, None, None, :
            ]
        for seq, take in pieces:
            if seq.scratch is None:
                seq.scratch = StaticCache(len(seq.request.prompt))
            a = len(ids)
            ids += seq.request.prompt[seq.prefilled : seq.prefilled + take]
            positions += range(seq.prefilled, seq.prefilled + take)
            spans.append((seq.scratch, a, len(ids)))
            seq.prefilled += take
        # the head runs only where a token is chosen or a prompt token scored:
        # (sequence, its first row of logits, rows, prompt position of the first)
        at, scored = list(range(n)), []
        for (seq, take), (_, a, b) in zip(pieces, spans):
            if seq.request.prompt_logprobs:
                scored.append((seq, len(at), b - a, seq.prefilled - take))
                at += range(a, b)
            elif seq.prefilled == len(seq.request.prompt):
                scored.append((seq, len(at), 1, seq.prefilled - 1))
                at.append(b - 1)
        row = torch.tensor([ids], device=self.device)
        cache = _StepCache(self.cache, n, mask, spans)
        body = model.body(row, cache=cache, positions=torch.tensor([positions], device=self.device))
        body.hidden = body.hidden[:, at]
        logits = model.head(body)[0].float()
        if n:
            self.batch_sizes.append(n)
            if len(self.batch_sizes) > 10_000:
                del self.batch_sizes[:5_000]
            self._choose(rows, logits[:n])
        for seq, start, count, first in scored:
            if seq.request.prompt_logprobs:
                self._score_prompt(seq, logits[start : start + count], first)
            if seq.prefilled < len(seq.request.prompt):
                continue
            if seq.request.max_new_tokens == 0:  # scored, nothing to generate
                self._finish(seq, "length")
                continue
            with self._lock:
                self.waiting.remove(seq)
            slot = len(self.running)
            self.cache.put(slot, seq.scratch, len(seq.request.prompt))
            seq.scratch = None
            self.running.append(seq)
            last = start + count - 1
            self._choose([seq], logits[last : last + 1])  # its first token

    def _score_prompt(self, seq: Sequence, logits: torch.Tensor, first: int) -> None:
        """Rows of `logits` at prompt positions first, first + 1, ...: each scores the
        prompt token after it."""
        prompt, top = seq.request.prompt, seq.request.top_logprobs
        if first == 0:
            seq.prompt_choices.append(TokenChoice(prompt[0]))
        nexts = prompt[first + 1 : first + 1 + logits.size(0)]
        if not nexts:
            return
        logp = logits[: len(nexts)].log_softmax(-1)
        chosen = logp.gather(1, torch.tensor(nexts, device=logp.device)[:, None])[:, 0].tolist()
        tops = logp.topk(top, dim=-1) if top else None
        for i, (token, lp) in enumerate(zip(nexts, chosen)):
            pairs = list(zip(tops.indices[i].tolist(), tops.values[i].tolist())) if top else []
            seq.prompt_choices.append(TokenChoice(token, lp, pairs))

    def _choose(self, rows: list[Sequence], logits: torch.Tensor) -> None:
        """Each row's next token from its logits row, with its own settings."""
        chosen = [0] * len(rows)
        plain = [
            i
            for i, s in enumerate(rows)
            if _plain_greedy(s.request.sampling) and not s.request.logit_bias
        ]
        if plain:  # greedy rows without penalties: one arg max for all
            picks = logits[plain].argmax(-1).tolist()
            for i, p in zip(plain, picks):
                chosen[i] = p
        for i, seq in enumerate(rows):
            if i in plain:
                continue
            r = seq.request
            history = None
            if (
                r.sampling.repetition_penalty != 1
                or r.sampling.frequency_penalty
                or (r.sampling.presence_penalty)
            ):
                past = (list(r.prompt) if r.penalize_prompt else []) + seq.ids
                history = torch.tensor([past or [-1]], device=self.device)
            row = logits[i : i + 1]
            if r.logit_bias:
                row = row.clone()
                ids = torch.tensor(list(r.logit_bias), device=row.device)
                row[0, ids] += torch.tensor(list(r.logit_bias.values()), device=row.device)
            chosen[i] = int(r.sampling.choose(row, history, seq.generator)[0])
        for i, seq in enumerate(rows):
            self._take(seq, chosen[i], logits[i])

    def _take(self, seq: Sequence, token: int, logits: torch.Tensor) -> None:
        r = seq.request
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        if token in r.stop_ids:
            self._finish(seq, "stop")
            return
        choice = TokenChoice(token)
        if r.logprobs or r.top_logprobs:
            logp = logits.log_softmax(-1)
            choice.logprob = float(logp[token])
            if r.top_logprobs:
                values, ids = logp.topk(r.top_logprobs)
                choice.top = list(zip(ids.tolist(), values.tolist()))
        seq.ids.append(token)
        seq.choices.append(choice)
        stop = False
        if r.on_token is not None:
            try:
                stop = bool(r.on_token(seq, choice))
            except Exception as e:  # a callback's failure ends its sequence, not the batch
                seq.error = e
                self._finish(seq, "error")
                return
        if stop:
            self._finish(seq, "stop")
        elif len(seq.ids) >= r.max_new_tokens or len(r.prompt) + len(seq.ids) >= self.context:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.done.is_set():
            return
        if seq in self.running:
            slot = self.running.index(seq)
            last = len(self.running) - 1
            if slot != last:  # keep the rows packed: the last one takes the freed slot
                mover = self.running[last]
                # + 1: during a step the mover's newest column is written but, until it
                # takes its token, not yet counted in its length
                self.cache.move(last, slot, min(mover.length + 1, self.cache.capacity))
                self.running[slot] = mover
            self.running.pop()
        else:
            with self._lock:
                if seq in self.waiting:
                    self.waiting.remove(seq)
        seq.scratch = None
        seq.finish_reason = reason
        seq.done.set()
        if seq.request.on_finish is not None:
            with contextlib.suppress(Exception):  # its own problem; the batch goes on
                seq.request.on_finish(seq)

    def fail_all(self, error: BaseException) -> None:
        """End every sequence with `error` (the step itself failed)."""
        with self._lock:
            everyone = list(self.running) + list(self.waiting)
        for seq in everyone:
            seq.error = error
            self._finish(seq, "error")
        self.cache = SlotCache(self.max_batch, self.context)

    def run_until_idle(self) -> None:
        while self.busy:
            self.step()

    # -- the background thread --------------------------------------------------------

    def start(self) -> Scheduler:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="lmforge-scheduler")
            self._thread.daemon = True
            self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self.busy and not self._stopping:
                    self._lock.wait()
                if self._stopping and not self.busy:
                    return
            try:
                self.step()
            except Exception as e:  # a broken step fails its requests, not the server
                self.fail_all(e)
                if self.on_step is not None:
                    self.on_step(len(self.running), len(self.waiting))

    def stop(self, timeout: float | None = None) -> None:
        """Let the running and waiting requests finish, then end the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def _plain_greedy(s: Sampling) -> bool:
    return (
        s.greedy
        and s.repetition_penalty == 1
        and not s.frequency_penalty
        and not s.presence_penalty
    )
