"""The HTTP server: OpenAI's API over a `Backend`, a chat page, health and metrics.

    POST /v1/completions        text (or token ids) in, text out; stream=True for SSE
    POST /v1/chat/completions   messages in, rendered with the model's chat template
    POST /v1/embeddings         encoders: mean-pooled, unit-length sentence vectors
    GET  /v1/models             the one model served
    GET  /health                200 {"status": "ok"}; 503 while draining at shutdown
    GET  /metrics               Prometheus text (lmforge.serve.metrics)
    GET  /                      the chat page (static/, no build step)

Streaming is server-sent events: one `data: {json}` line per chunk, then `data: [DONE]`.
A client that goes away mid-stream cancels its sequences: the next step frees their KV
slots. Every refusal is an HTTP status with OpenAI's error object,
{"error": {"message", "type", "param", "code"}}: 400 for invalid requests (malformed
JSON, wrong types, out-of-range values, a prompt over the context), 401 without the API key
(`Authorization: Bearer KEY` on /v1), 404 for an unknown model or path, 413 for a body
over the limit, 429 beyond the concurrent requests allowed, 503 while shutting down, and
500 (still the error object) should the server itself fail.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import math
import time
import uuid
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.infer.sampling import Sampling
from lmforge.serve.backend import ApiError, Backend, Done, GenerationSettings, Piece
from lmforge.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)

STATIC = files("lmforge.serve") / "static"
FINGERPRINT = "fp_lmforge"


def error_body(status: int, message: str, type_: str, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.status, e.message, e.type, e.param, e.code), e.status)


class Guard:
    """ASGI middleware before any route: 503 while draining, 401 without the API key,
    413 for a body over the limit (by Content-Length, or counted as it arrives); and the
    count of /v1 requests by status. Plain ASGI, not Starlette's BaseHTTPMiddleware, which
    would pass every streamed chunk through a task and a memory stream of its own."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not scope["path"].startswith("/v1/"):
            return await self._guarded(scope, receive, send)
        status = None

        async def counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted)
        finally:
            if status is not None:
                self.state.backend.metrics.requests.labels(scope["path"], str(status)).inc()

    async def _guarded(self, scope, receive, send):
        s = self.state
        path = scope["path"]
        api = path.startswith("/v1/")
        headers = dict(scope["headers"])
        if api and s.draining:
            return await _send_error(send, ApiError(503, "the server is shutting down"))
        if api and s.api_key is not None:
            given = headers.get(b"authorization", b"").decode("latin-1")
            expected = f"Bearer {s.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return await _send_error(
                    send,
                    ApiError(
                        401,
                        "missing or wrong API key; send the header 'Authorization: Bearer KEY'",
                        code="invalid_api_key",
                    ),
                )
        limit = s.backend.limits.max_body_bytes
        too_big = ApiError(
            413,
            f"the request body is over this server's limit of {limit} bytes; send less",
            code="request_too_large",
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_error(send, too_big)
        seen = 0
        exceeded = False

        async def counted():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _BodyTooLarge  # FastAPI turns it into a 400, replaced below
            return message

        async def guarded_send(message):
            if not exceeded:
                return await send(message)
            if message["type"] == "http.response.start":  # the app's answer becomes a 413
                await _send_error(send, too_big)

        try:
            await self.app(scope, counted, guarded_send)
        except _BodyTooLarge:
            await _send_error(send, too_big)


class _BodyTooLarge(Exception):
    pass


async def _send_error(send, e: ApiError) -> None:
    body = json.dumps(error_body(e.status, e.message, e.type, e.param, e.code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": e.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class State:
    def __init__(self, backend: Backend, api_key: str | None):
        self.backend = backend
        self.api_key = api_key or None
        self.draining = False


def create_app(backend: Backend, api_key: str | None = None) -> FastAPI:
    state = State(backend, api_key)

    @asynccontextmanager
    async def lifespan(app):
        backend.start()
        yield
        backend.stop(timeout=30)

    app = FastAPI(title="lmforge", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.lmforge = state
    app.add_middleware(Guard, state=state)
    metrics = backend.metrics

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
            return error_response(ApiError(400, message.replace(" ()", ""), code="invalid_json"))
        param = ".".join(loc) or None
        msg = str(first.get("msg")).removeprefix("Value error, ")
        message = f"{param}: {msg}" if param else msg
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problems)"
        return error_response(ApiError(400, message, param, "invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        if e.status_code == 400:  # FastAPI's own: a body it could not decode
            message = f"the body is not valid JSON in UTF-8 ({e.detail})"
            return error_response(ApiError(400, message, code="invalid_json"))
        return error_response(ApiError(e.status_code, str(e.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        # our bug, not the client's: still OpenAI's error object, not a bare text page
        # (Starlette logs the traceback after this answer)
        return error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}"))

    @app.get("/health")
    async def health():
        if state.draining:
            return JSONResponse({"status": "draining"}, 503)
        return {"status": "ok", "model": backend.name, "kind": backend.kind}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(backend)]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        _check_model(backend, name)
        return _model_card(backend)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        backend.require("generation", "/v1/completions")
        _check_model(backend, body.model)
        prompts = await run_in_threadpool(_completion_prompts, backend, body.prompt)
        for ids in prompts:
            backend.check_prompt(ids)
        settings = _settings(backend, body, max(map(len, prompts)), body.max_tokens, 16)
        settings.logprobs = body.logprobs is not None
        settings.top_logprobs = body.logprobs or 0
        settings.prompt_logprobs = body.echo and settings.logprobs
        if body.best_of is not None and body.best_of > body.n:
            settings.best_of = body.best_of
        echoes = [backend.tokenizer.decode(p) if body.echo else "" for p in prompts]
        return await _respond(request, backend, body, prompts, settings, [], "completion", echoes)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        backend.require("generation", "/v1/chat/completions")
        _check_model(backend, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        ids = await run_in_threadpool(backend.chat_prompt, messages)
        backend.check_prompt(ids, "messages")
        asked = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else (body.max_tokens)
        )
        settings = _settings(backend, body, len(ids), asked, None)
        settings.logprobs = body.logprobs
        settings.top_logprobs = body.top_logprobs or 0 if body.logprobs else 0
        return await _respond(request, backend, body, [ids], settings, backend.chat_stops, "chat")

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        backend.require("embeddings", "/v1/embeddings")
        _check_model(backend, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        with backend.admit():
            vectors, tokens = await run_in_threadpool(backend.embed, texts)
        if body.dimensions is not None:
            if body.dimensions > vectors.size(1):
                raise ApiError(
                    400, f"dimensions is {body.dimensions}; the model has {vectors.size(1)}",
                    "dimensions",
                )  # fmt: skip
            vectors = vectors[:, : body.dimensions]
            vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        data = []
        for i, v in enumerate(vectors):
            if body.encoding_format == "base64":
                value = base64.b64encode(v.numpy().astype("<f4").tobytes()).decode()
            else:
                value = v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": backend.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _model_card(backend: Backend) -> dict:
    return {
        "id": backend.name,
        "object": "model",
        "created": backend.created,
        "owned_by": "lmforge",
        "context_length": backend.context,
        "kind": backend.kind,
    }


def _check_model(backend: Backend, name: str) -> None:
    if name != backend.name:
        raise ApiError(
            404,
            f"model '{name}' is not served here; this server serves '{backend.name}'",
            "model",
            "model_not_found",
        )


def _completion_prompts(backend: Backend, prompt) -> list[list[int]]:
    if isinstance(prompt, str):
        return [backend.encode(prompt)]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return [backend.encode(p) if isinstance(p, str) else list(p) for p in prompt]


def _settings(backend, body, prompt_len: int, asked, default) -> GenerationSettings:
    try:
        sampling = Sampling(
            temperature=body.temperature,
            top_k=max(body.top_k, 0),
            top_p=body.top_p,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            frequency_penalty=body.frequency_penalty,
            presence_penalty=body.presence_penalty,
        )
    except Exception as e:  # Sampling's own checks, after pydantic's ranges
        raise ApiError(400, str(e)) from None
    backend.check_logit_bias(body.logit_bias)
    return GenerationSettings(
        max_tokens=backend.max_tokens(asked, prompt_len, default),
        sampling=sampling,
        seed=body.seed,
        stop=list(body.stop or []),
        n=body.n,
        logit_bias=body.logit_bias,
    )


async def _respond(request, backend, body, prompts, settings, extra_stops, kind, echoes=None):
    """Start every choice, then stream the chunks or gather the whole response."""
    admission = backend.admit()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    seqs = []
    wanted = settings.n  # choices returned per prompt
    if settings.best_of:  # generate best_of, return the n best
        settings = dataclasses.replace(settings, n=settings.best_of)
    try:
        for p, ids in enumerate(prompts):
            seqs += backend.generate(ids, settings, queue, loop, p * settings.n, extra_stops)
    except BaseException:
        for s in seqs:
            s.cancel()
        admission.release()
        raise
    started = time.perf_counter()
    ids = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    meta = {"id": ids, "created": int(time.time()), "model": backend.name}
    prompt_tokens = sum(map(len, prompts))
    choices = len(seqs)
    formatter = _Formatter(backend, kind, settings, echoes or [""] * len(prompts))

    def finish() -> None:
        for s in seqs:
            s.cancel()  # a no-op for those already done
        admission.release()
        backend.metrics.duration.observe(time.perf_counter() - started)

    if body.stream:

        async def events():
            try:
                completion_tokens = 0
                for index in range(choices):
                    first = formatter.first_chunk(index, settings.n)
                    if first is not None:
                        yield _sse({**meta, **first, **_usage_none(body)})
                open_choices = choices
                while open_choices:
                    arrived = [await queue.get()]
                    while not queue.empty():  # all that is there already goes in one write
                        arrived.append(queue.get_nowait())
                    out = []
                    for event in arrived:
                        if isinstance(event, Piece):
                            chunk = formatter.piece_chunk(event, settings.n)
                            out.append(_sse({**meta, **chunk, **_usage_none(body)}))
                        elif isinstance(event, Done):
                            open_choices -= 1
                            completion_tokens += event.completion_tokens
                            if event.finish_reason == "error":
                                message = f"generation failed: {event.error}"
                                yield "".join(out) + _sse(error_body(500, message, "server_error"))
                                return
                            chunk = formatter.done_chunk(event)
                            out.append(_sse({**meta, **chunk, **_usage_none(body)}))
                    yield "".join(out)
                if body.include_usage:
                    usage = _usage(prompt_tokens, completion_tokens)
                    yield _sse(
                        {**meta, **formatter.chunk_envelope(), "choices": [], "usage": usage}
                    )
                yield "data: [DONE]\n\n"
            finally:
                finish()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    try:
        done: dict[int, Done] = {}
        while len(done) < choices:
            try:
                event = await asyncio.wait_for(queue.get(), 0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return Response(status_code=499)
                continue
            if isinstance(event, Piece):
                formatter.add(event)
            else:
                done[event.index] = event
        failed = [d for d in done.values() if d.finish_reason == "error"]
        if failed:
            raise ApiError(500, f"generation failed: {failed[0].error}")
        usage = _usage(prompt_tokens, sum(d.completion_tokens for d in done.values()))
        choices_out = formatter.whole(done)
        if settings.best_of:
            choices_out = formatter.best(choices_out, wanted)
        body_out = {**meta, **formatter.envelope(), "choices": choices_out}
        return {**body_out, "usage": usage}
    finally:
        finish()


def _usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_none(body) -> dict:
    return {"usage": None} if body.include_usage else {}


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Formatter:
    """The choices of one response, as chunks (stream) or whole, in the API's shapes."""

    def __init__(self, backend, kind, settings, echoes):
        self.backend = backend
        self.kind = kind
        self.settings = settings
        self.echoes = echoes
        self.text: dict[int, str] = {}
        self.tokens: dict[int, list] = {}
        self.prompt_tokens: dict[int, list] = {}  # echo with logprobs: the prompt, scored
        self.offset: dict[int, int] = {}

    def envelope(self) -> dict:
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {"object": obj, "system_fingerprint": FINGERPRINT}

    def chunk_envelope(self) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"object": obj, "system_fingerprint": FINGERPRINT}

    def _echo(self, index: int) -> str:
        return self.echoes[index // self.settings.n]

    def add(self, piece: Piece) -> None:
        if piece.prompt:
            self.prompt_tokens[piece.index] = piece.tokens
            return
        if piece.index not in self.text:
            self.text[piece.index] = self._echo(piece.index)
        self.text[piece.index] += piece.text
        self.tokens.setdefault(piece.index, []).extend(piece.tokens)

    # -- logprobs in the two shapes -----------------------------------------------------

    def _chat_logprobs(self, tokens) -> dict | None:
        if not self.settings.logprobs:
            return None
        text = self.backend.token_text

        def entry(token, logprob):
            t = text(token)
            return {"token": t, "logprob": logprob, "bytes": list(t.encode("utf-8"))}

        content = []
        for c in tokens:
            item = entry(c.id, c.logprob)
            item["top_logprobs"] = [entry(i, lp) for i, lp in c.top]
            content.append(item)
        return {"content": content, "refusal": None}

    def _completion_logprobs(self, index: int, tokens, prompt: bool = False) -> dict | None:
        """The legacy shape; the prompt's tokens (echo) start at offset 0 and the first has
        no log-probability, the new ones start after the echoed text."""
        if not self.settings.logprobs:
            return None
        text = self.backend.token_text
        offset = 0 if prompt else self.offset.get(index, len(self._echo(index)))
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for c in tokens:
            t = text(c.id)
            out["tokens"].append(t)
            out["token_logprobs"].append(c.logprob)
            out["top_logprobs"].append(
                None if c.logprob is None else {text(i): lp for i, lp in c.top}
            )
            out["text_offset"].append(offset)
            offset += len(t)
        if not prompt:
            self.offset[index] = offset
        return out

    # -- stream -------------------------------------------------------------------------

    def first_chunk(self, index: int, n: int) -> dict | None:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": "", "refusal": None}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            return {**self.chunk_envelope(), "choices": [choice]}
        echo = self._echo(index)
        if echo and not self.settings.prompt_logprobs:  # else it comes scored (piece_chunk)
            choice = {"index": index, "text": echo, "logprobs": None, "finish_reason": None}
            return {**self.chunk_envelope(), "choices": [choice]}
        return None

    def piece_chunk(self, piece: Piece, n: int) -> dict:
        if piece.prompt:
            choice = {
                "index": piece.index,
                "text": self._echo(piece.index),
                "logprobs": self._completion_logprobs(piece.index, piece.tokens, prompt=True),
                "finish_reason": None,
            }
        elif self.kind == "chat":
            choice = {
                "index": piece.index,
                "delta": {"content": piece.text},
                "logprobs": self._chat_logprobs(piece.tokens),
                "finish_reason": None,
            }
        else:
            choice = {
                "index": piece.index,
                "text": piece.text,
                "logprobs": self._completion_logprobs(piece.index, piece.tokens),
                "finish_reason": None,
            }
        return {**self.chunk_envelope(), "choices": [choice]}

    def done_chunk(self, done: Done) -> dict:
        reason = _reason(done)
        if self.kind == "chat":
            choice = {"index": done.index, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": done.index, "text": "", "logprobs": None, "finish_reason": reason}
        return {**self.chunk_envelope(), "choices": [choice]}

    # -- whole --------------------------------------------------------------------------

    def whole(self, done: dict[int, Done]) -> list[dict]:
        out = []
        for index in sorted(done):
            text = self.text.get(index, self._echo(index))
            tokens = self.tokens.get(index, [])
            if self.kind == "chat":
                out.append(
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": self._chat_logprobs(tokens),
                        "finish_reason": _reason(done[index]),
                    }
                )
            else:
                logprobs = self._completion_logprobs(index, tokens)
                if logprobs is not None and index in self.prompt_tokens:
                    scored = self._completion_logprobs(index, self.prompt_tokens[index], True)
                    logprobs = {k: scored[k] + logprobs[k] for k in logprobs}
                out.append(
                    {
                        "index": index,
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": _reason(done[index]),
                    }
                )
        return out

    def best(self, choices: list[dict], n: int) -> list[dict]:
        """best_of: of each prompt's choices (settings.n of them, in order), the `n` with
        the highest mean log-probability per generated token, renumbered; ties keep order."""
        per = self.settings.n

        def mean(choice: dict) -> float:
            tokens = self.tokens.get(choice["index"], [])
            return sum(c.logprob for c in tokens) / len(tokens) if tokens else -math.inf

        out = []
        for p in range(0, len(choices), per):
            ranked = sorted(choices[p : p + per], key=mean, reverse=True)[:n]
            for j, choice in enumerate(ranked):
                out.append({**choice, "index": p // per * n + j})
        return out


def _reason(done: Done) -> str:
    return done.finish_reason if done.finish_reason in ("stop", "length") else "stop"
