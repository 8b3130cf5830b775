"""The model behind the server: a model directory loaded once, and requests turned into
sequences of the continuous-batching scheduler (lmforge.infer.batching) or into sentence
embeddings.

A decoder-only model generates: completions take the prompt as text (or token ids),
chat renders the messages with the directory's chat template exactly as `lmforge chat`
does (lmforge.infer.chat; without a template, plain "ROLE: text" turns that stop at the
next "USER:"). Each choice is one scheduler sequence with its own `TextStream`, so stop
strings and half-decoded UTF-8 are handled where the tokens arrive, on the scheduler's
thread; its text goes to the request's asyncio queue as `Piece` and `Done` events.

An encoder (BERT family) embeds: mean pooling over the real tokens, unit length, as
`lmforge model embed` (lmforge.models.sentence).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.device import pick_device
from lmforge.errors import LmforgeError
from lmforge.infer.batching import Request, Scheduler, Sequence, TokenChoice
from lmforge.infer.chat import DEFAULT_STOP, DEFAULT_TEMPLATE, load_chat_template, render_chat
from lmforge.infer.loading import load_model_and_tokenizer
from lmforge.infer.precision import inference_models, resolve
from lmforge.infer.sampling import Sampling
from lmforge.infer.stream import TextStream
from lmforge.models.sentence import max_length_of, sentence_embeddings
from lmforge.serve.metrics import Metrics


@dataclass
class Limits:
    """Per-request limits; a request over one is refused with 400, 413 or 429."""

    max_prompt_tokens: int | None = None  # default: the model's context - 1
    max_tokens: int | None = None  # the most a request may ask to generate; None: no cap
    max_concurrent: int = 64  # requests in progress at once (429 beyond)
    max_body_bytes: int = 1_000_000  # request body (413 beyond)


@dataclass
class GenerationSettings:
    max_tokens: int
    sampling: Sampling
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: dict[int, float] | None = None
    prompt_logprobs: bool = False  # completions with echo and logprobs: score the prompt
    best_of: int | None = None  # completions: `n` of this many, by mean log-probability


@dataclass
class Piece:
    """New text of choice `index`, with the tokens it came from; `prompt`: the prompt's
    own tokens, scored (its text is the echo, not new)."""

    index: int
    text: str
    tokens: list[TokenChoice]
    prompt: bool = False


@dataclass
class Done:
    index: int
    finish_reason: str  # stop, length, cancelled, error
    completion_tokens: int
    error: BaseException | None = None


class ApiError(Exception):
    """A request the server refuses: HTTP status and an OpenAI-style error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = {
            401: "authentication_error",
            404: "invalid_request_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
            503: "server_unavailable",
        }.get(status, "invalid_request_error" if status < 500 else "server_error")


class Backend:
    def __init__(
        self,
        directory: str | Path,
        name: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        max_batch: int = 8,
        prefill_chunk: int = 64,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
    ):
        self.directory = Path(directory)
        self.name = name or self.directory.resolve().name
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        self.created = int(time.time())
        self.device = pick_device(device)
        model, self.tokenizer = load_model_and_tokenizer(directory, self.device)
        self.context = model.config.block_size
        self.scheduler: Scheduler | None = None
        self._embed_lock = threading.Lock()
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._outboxes: dict[asyncio.AbstractEventLoop, _Outbox] = {}
        if model.config.arch == "encoder":
            self.kind = "embeddings"
            self.model = model.eval()
            self.max_length = max_length_of(directory, model)
        elif model.config.arch == "decoder" and model.config.head == "lm":
            self.kind = "generation"
            self.model, decode_model = inference_models(
                model, resolve(precision, self.device, max_batch), rows=max_batch
            )
            self.scheduler = Scheduler(
                self.model, max_batch, prefill_chunk, decode_model, self._on_step
            )
            template = load_chat_template(directory)
            self.chat_stops = [] if template else list(DEFAULT_STOP)
            self.chat_template = template or DEFAULT_TEMPLATE
            self.stop_ids = [i for i in [self.tokenizer.eot_id] if i is not None]
        else:
            raise LmforgeError(
                f"{directory}: a '{model.config.arch}' model with a '{model.config.head}' head "
                "cannot be served; serve a decoder with an LM head (generation) or an encoder "
                "(embeddings)"
            )
        if self.limits.max_prompt_tokens is None:
            self.limits.max_prompt_tokens = self.context - 1

    def start(self) -> None:
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self, timeout: float | None = None) -> None:
        if self.scheduler is not None:
            self.scheduler.stop(timeout)

    # -- admission ----------------------------------------------------------------------

    def admit(self) -> _Admission:
        """A slot among the `max_concurrent` requests in progress, or a 429."""
        with self._count_lock:
            if self._in_flight >= self.limits.max_concurrent:
                raise ApiError(
                    429,
                    f"the server is at its limit of {self.limits.max_concurrent} concurrent "
                    "requests; retry shortly",
                    code="too_many_requests",
                )
            self._in_flight += 1
        self.metrics.in_flight.inc()
        return _Admission(self)

    def _release(self) -> None:
        with self._count_lock:
            self._in_flight -= 1
        self.metrics.in_flight.dec()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def require(self, kind: str, endpoint: str) -> None:
        if self.kind != kind:
            what = (
                "an encoder: it serves /v1/embeddings"
                if kind == "generation"
                else ("a language model: it serves /v1/completions and /v1/chat/completions")
            )
            raise ApiError(400, f"model '{self.name}' is {what}, not {endpoint}", "model")

    # -- prompts ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            text = render_chat(self.chat_template, messages)
        except LmforgeError as e:
            raise ApiError(400, str(e), "messages") from None
        return self.encode(text)

    def check_prompt(self, ids: list[int], param: str = "prompt") -> None:
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization; give some text", param)
        if any(not 0 <= i < self.tokenizer.vocab_size for i in ids):
            raise ApiError(400, f"token ids must be in [0, {self.tokenizer.vocab_size})", param)
        limit = min(self.limits.max_prompt_tokens, self.context - 1)
        if len(ids) > limit:
            raise ApiError(
                400,
                f"the prompt has {len(ids)} tokens; this server takes at most {limit} "
                f"(the model's context is {self.context}); shorten it",
                param,
                "context_length_exceeded",
            )

    def check_logit_bias(self, bias: dict[int, float] | None) -> None:
        vocab = self.tokenizer.vocab_size
        wrong = [i for i in bias or () if not 0 <= i < vocab]
        if wrong:
            raise ApiError(
                400, f"logit_bias: token id {wrong[0]} is not in [0, {vocab})", "logit_bias"
            )

    def max_tokens(self, asked: int | None, prompt_len: int, default: int | None) -> int:
        cap = self.limits.max_tokens
        if asked is not None and cap is not None and asked > cap:
            raise ApiError(
                400, f"max_tokens is {asked}; this server allows at most {cap}", "max_tokens"
            )
        room = self.context - prompt_len
        chosen = asked if asked is not None else (default if default is not None else room)
        return min(chosen, room, cap if cap is not None else room)

    # -- generation ---------------------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        settings: GenerationSettings,
        queue: asyncio.Queue,
        loop: asyncio.AbstractEventLoop,
        first_index: int = 0,
        extra_stops: list[str] = (),
    ) -> list[Sequence]:
        """Start `settings.n` choices of `prompt`; their events go to `queue`."""
        self.metrics.prompt_tokens.inc(len(prompt))
        seqs = []
        for k in range(settings.n):
            index = first_index + k
            # torch seeds are 64-bit: -5 and 2**64 - 5 are one seed; + k wraps likewise
            seed = None if settings.seed is None else (settings.seed + k) % 2**64
            seqs.append(self._start(prompt, settings, seed, index, queue, loop, extra_stops))
        return seqs

    def _start(self, prompt, settings, seed, index, queue, loop, extra_stops) -> Sequence:
        stream = TextStream(self.tokenizer, list(settings.stop) + list(extra_stops))
        pending: list[TokenChoice] = []
        last = [0.0]
        metrics = self.metrics

        outbox = self._outbox(loop)

        def put(event) -> None:
            outbox.put(queue, event)

        scored = [not settings.prompt_logprobs]  # the prompt's scores went out (or none asked)

        def scored_prompt(seq: Sequence) -> None:  # once, before the first new text
            if not scored[0]:
                scored[0] = True
                put(Piece(index, "", list(seq.prompt_choices), prompt=True))

        def on_token(seq: Sequence, choice: TokenChoice) -> bool:
            scored_prompt(seq)
            now = time.perf_counter()
            if len(seq.ids) == 1:
                metrics.ttft.observe(now - seq.submitted)
            else:
                metrics.itl.observe(now - last[0])
            last[0] = now
            metrics.generated_tokens.inc()
            pending.append(choice)
            text = stream.push(choice.id)
            if text:
                put(Piece(index, text, list(pending)))
                pending.clear()
            return stream.stopped

        def on_finish(seq: Sequence) -> None:
            if seq.finish_reason not in ("cancelled", "error"):
                scored_prompt(seq)
                rest = stream.finish()
                if rest or pending:
                    put(Piece(index, rest, list(pending)))
            reason = seq.finish_reason
            metrics.finished.labels(reason).inc()
            put(Done(index, reason, len(seq.ids), seq.error))

        request = Request(
            prompt,
            settings.max_tokens,
            settings.sampling,
            seed=seed,
            stop_ids=self.stop_ids,
            # best_of ranks the choices by their tokens' log-probabilities
            logprobs=settings.logprobs or bool(settings.best_of),
            top_logprobs=settings.top_logprobs,
            penalize_prompt=False,  # OpenAI's penalties count the generated tokens only
            logit_bias=settings.logit_bias,
            prompt_logprobs=settings.prompt_logprobs,
            on_token=on_token,
            on_finish=on_finish,
        )
        try:
            return self.scheduler.submit(request)
        except LmforgeError as e:
            raise ApiError(400, str(e), "prompt") from None

    def _on_step(self, running: int, waiting: int) -> None:
        self.metrics.on_step(running, waiting)
        with self._count_lock:
            outboxes = list(self._outboxes.values())
        for outbox in outboxes:
            outbox.flush()

    def _outbox(self, loop: asyncio.AbstractEventLoop) -> _Outbox:
        with self._count_lock:
            if loop not in self._outboxes:
                self._outboxes[loop] = _Outbox(loop)
            return self._outboxes[loop]

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    # -- embeddings ---------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        """(unit vectors (len(texts), width), tokens read)."""
        if any(not t for t in texts):
            raise ApiError(400, "an input is an empty string; give some text", "input")
        with self._embed_lock:
            tokens = sum(len(self.tokenizer.tokenize(t, max_length=self.max_length)) for t in texts)
            vectors = sentence_embeddings(self.model, self.tokenizer, texts, self.max_length)
        self.metrics.prompt_tokens.inc(tokens)
        return vectors.float().cpu(), tokens


class _Outbox:
    """Events from the scheduler's thread to the requests' queues on one event loop. A
    step's events collect here, and at the end of the step (`flush`, the scheduler's
    on_step) one call_soon_threadsafe wakes the loop, which delivers them all at once. One
    wake-up per step, not per token, and none in the middle of a step: a woken loop takes
    the GIL, and the step would wait for it at its next token."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: list[tuple[asyncio.Queue, object]] = []
        self.lock = threading.Lock()
        self.woken = False  # a delivery is scheduled and has not run yet

    def put(self, queue: asyncio.Queue, event) -> None:
        with self.lock:
            self.items.append((queue, event))

    def flush(self) -> None:
        with self.lock:
            if not self.items or self.woken:
                return
            self.woken = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed (the server stopped): nobody listens
            with self.lock:
                self.items.clear()

    def _deliver(self) -> None:
        with self.lock:
            items, self.items, self.woken = self.items, [], False
        for queue, event in items:
            queue.put_nowait(event)


class _Admission:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.backend._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()
