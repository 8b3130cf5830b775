"""Bad requests get an HTTP status and OpenAI's error object, never a crash: malformed JSON,
wrong types, unknown model, negative max_tokens, a prompt over the context, a 1 MB body,
no API key, too many requests at once; a client that leaves mid-stream frees its slot;
Ctrl-C drains (in-flight requests finish, new ones get 503)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import GeneratorType

import httpx
import pytest

from tests.serve.conftest import start

openai = pytest.importorskip("openai")


def post(server, path, body, **kwargs):
    content = body if isinstance(body, (bytes, str, GeneratorType)) else json.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=30, **kwargs)


def assert_error(response, status, param=None, fragment=""):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment.lower() in error["message"].lower(), error["message"]
    if param is not None:
        assert error["param"] == param
    return error


COMPLETION = {"model": "tiny", "prompt": "USER: hi", "max_tokens": 5}
# greedy, and no end-of-text token in its first 100 tokens: a stream that lasts
LONG_STREAM = {**COMPLETION, "prompt": "USER: good day", "max_tokens": 100, "temperature": 0,
               "stream": True}  # fmt: skip


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        (b'{"model": "tiny", "prompt": ', None, "not valid JSON"),
        (b"\xff\xfe not json", None, "JSON"),
        ({**COMPLETION, "max_tokens": "lots"}, "max_tokens", "integer"),
        ({**COMPLETION, "max_tokens": -1}, "max_tokens", "greater than or equal to 0"),
        ({**COMPLETION, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({**COMPLETION, "top_p": 0}, "top_p", "greater than 0"),
        ({**COMPLETION, "n": 0}, "n", ""),
        ({**COMPLETION, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({**COMPLETION, "temprature": 0.5}, "temprature", "extra"),
        ({"model": "tiny"}, "prompt", "field required"),
        ({**COMPLETION, "prompt": [10**6]}, "prompt", "token ids"),
        ({**COMPLETION, "prompt": ""}, "prompt", "empty"),
        ({**COMPLETION, "prompt": "x" * 200}, "prompt", "context"),
        ([1, 2], None, ""),
        ({**COMPLETION, "seed": 2**63}, "seed", "less than"),  # the API's seed is an int64
        ({**COMPLETION, "stream_options": {"include_usage": True}}, None, "only allowed when"),
        ({**COMPLETION, "logit_bias": {"abc": 1}}, "logit_bias", "token ids as strings"),
        ({**COMPLETION, "logit_bias": {"5": 101}}, "logit_bias", "[-100, 100]"),
        ({**COMPLETION, "logit_bias": {"100000": 1}}, "logit_bias", "not in [0,"),
        ({**COMPLETION, "best_of": 2, "n": 3}, None, "at least n"),
        ({**COMPLETION, "best_of": 3, "stream": True}, None, "cannot be streamed"),
        ({**COMPLETION, "suffix": "the end"}, None, "fill in the middle"),
    ],
)
def test_invalid_completion_requests_are_400(server, body, param, fragment):
    assert_error(post(server, "/v1/completions", body), 400, param, fragment)


def test_chat_wrong_types_and_prompt_over_the_context(server):
    assert_error(post(server, "/v1/chat/completions", {"model": "tiny", "messages": "hi"}), 400)
    bad_role = {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}
    assert_error(post(server, "/v1/chat/completions", bad_role), 400, None, "role")
    long = {"model": "tiny", "messages": [{"role": "user", "content": "hello " * 40}]}
    error = assert_error(post(server, "/v1/chat/completions", long), 400, "messages", "context")
    assert error["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="context"):
        server.client().chat.completions.create(model="tiny", messages=long["messages"])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "does not call tools"),
        ({"response_format": {"type": "json_object"}}, "does not constrain"),
    ],
)
def test_tools_and_json_output_are_refused_with_the_reason(server, extra, fragment):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **extra}
    assert_error(post(server, "/v1/chat/completions", body), 400, None, fragment)


def test_top_logprobs_without_logprobs_is_400(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}
    assert_error(post(server, "/v1/chat/completions", body), 400, None, "needs logprobs")


def test_a_failure_inside_the_server_is_a_500_error_object(server, monkeypatch):
    def broken(messages):
        raise RuntimeError("template engine fell over")

    monkeypatch.setattr(server.backend, "chat_prompt", broken)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    error = assert_error(post(server, "/v1/chat/completions", body), 500, None, "fell over")
    assert error["type"] == "server_error"
    monkeypatch.undo()
    assert post(server, "/v1/chat/completions", {**body, "max_tokens": 2}).status_code == 200


def test_unknown_model_and_path_are_404(server):
    error = assert_error(post(server, "/v1/completions", {**COMPLETION, "model": "gpt-9"}), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="gpt-9", prompt="hi")
    assert_error(httpx.get(server.url + "/v1/nothing-here"), 404)


def test_a_one_megabyte_body_is_413_and_the_server_goes_on(server):
    huge = {**COMPLETION, "prompt": "a" * 1_000_000}
    error = assert_error(post(server, "/v1/completions", huge), 413, None, "limit")
    assert error["code"] == "request_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(20):
            yield b"a" * 60_000
        yield b'"}'

    assert_error(post(server, "/v1/completions", chunks()), 413)
    assert post(server, "/v1/completions", COMPLETION).status_code == 200


def test_api_key(model_dir, monkeypatch):
    s = start(model_dir, api_key="sesame")
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sesame"}):
            error = assert_error(post(s, "/v1/completions", COMPLETION, headers=headers), 401)
            assert error["code"] == "invalid_api_key"
        assert_error(httpx.get(s.url + "/v1/models"), 401)
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        assert [m.id for m in s.client("sesame").models.list().data] == ["tiny"]
        ok = post(s, "/v1/completions", COMPLETION, headers={"authorization": "Bearer sesame"})
        assert ok.status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200  # not under /v1
    finally:
        s.close()


def slow_steps(server, seconds=0.01):
    """Make each scheduler step take a while, so a stream is still running when we act;
    returns the function that undoes it."""
    scheduler = server.backend.scheduler
    observe = scheduler.on_step

    def on_step(running, waiting):
        observe(running, waiting)
        time.sleep(seconds)

    scheduler.on_step = on_step
    return lambda: setattr(scheduler, "on_step", observe)


def test_too_many_concurrent_requests_are_429(model_dir):
    s = start(model_dir, max_concurrent=1)
    slow_steps(s)
    try:
        with httpx.stream("POST", s.url + "/v1/completions", json=LONG_STREAM, timeout=30) as first:
            lines = first.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)
            rr = post(s, "/v1/completions", COMPLETION)
            error = assert_error(rr, 429)
            assert error["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError):
                s.client().completions.create(model="tiny", prompt="hi", max_tokens=2)
            assert "[DONE]" in "".join(lines)
        assert post(s, "/v1/completions", COMPLETION).status_code == 200  # the slot is back
    finally:
        s.close()


def test_max_tokens_over_the_servers_cap_is_400(model_dir):
    s = start(model_dir, max_tokens=10, max_prompt_tokens=20)
    try:
        over = {**COMPLETION, "max_tokens": 11}
        assert_error(post(s, "/v1/completions", over), 400, "max_tokens")
        long = {**COMPLETION, "prompt": "a" * 21}
        assert_error(post(s, "/v1/completions", long), 400, "prompt", "at most 20")
        r = post(s, "/v1/completions", {"model": "tiny", "prompt": "hi"}).json()
        assert r["usage"]["completion_tokens"] <= 10
    finally:
        s.close()


def test_a_client_leaving_mid_stream_frees_its_slot(model_dir):
    s = start(model_dir)
    slow_steps(s)
    try:
        cancelled = s.backend.metrics.finished.labels("cancelled")
        before = cancelled._value.get()
        client = s.client()
        stream = client.completions.create(
            model="tiny", prompt="USER: good day", max_tokens=100, temperature=0, stream=True
        )
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()  # the client goes away after 4 chunks
        deadline = time.monotonic() + 10
        while s.backend.scheduler.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not s.backend.scheduler.busy  # well before 100 tokens at 10 ms a step
        assert cancelled._value.get() == before + 1
        assert s.backend.in_flight == 0
        r = client.completions.create(model="tiny", prompt="hi", max_tokens=3)
        assert r.choices[0].finish_reason in ("length", "stop")
    finally:
        s.close()


def test_ctrl_c_drains_in_flight_requests_and_refuses_new_ones(model_dir):
    """uvicorn's signal handler, called as Ctrl-C would: the running stream ends with
    [DONE], /health and new /v1 requests get 503 meanwhile, then the server stops."""
    s = start(model_dir)
    slow_steps(s, 0.02)
    with httpx.stream("POST", s.url + "/v1/completions", json=LONG_STREAM, timeout=30) as r:
        lines = r.iter_lines()
        next(lines)
        s.server.handle_exit(signal.SIGINT, None)
        assert_error(post(s, "/v1/completions", COMPLETION), 503, None, "shutting down")
        assert httpx.get(s.url + "/health").status_code == 503
        rest = [ln for ln in lines if ln]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
    s.thread.join(30)
    assert not s.thread.is_alive() and s.server.should_exit
    assert s.backend.scheduler._thread is None  # the scheduler's thread ended too


def test_the_cli_serves_and_exits_0_on_ctrl_c(model_dir):
    """The real command in a process: it prints the URL, answers, and a SIGINT ends it
    with status 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "serve", str(model_dir), "--port", "0",
         "--device", "cpu", "--precision", "fp32", "--name", "tiny", "--api-key", "k"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "lmforge serve: tiny (generation) at http://localhost:" in line, line
        assert "API key required" in line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        r = client.completions.create(model="tiny", prompt="USER: hi", max_tokens=4)
        assert r.usage.completion_tokens <= 4
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_the_cli_refuses_bad_settings(model_dir, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for args, fragment in (
            ([str(model_dir), "--max-batch", "0"], "--max-batch"),
            ([str(model_dir), "--port", "70000"], "--port"),
            ([str(tmp_path)], str(tmp_path)),
            ([str(model_dir), "--port", str(port)], f"127.0.0.1:{port}: Address already in use"),
        ):
            out = subprocess.run(
                [sys.executable, "-m", "lmforge", "serve", *args], capture_output=True, text=True
            )
            assert out.returncode == 2, out.stderr
            assert fragment in out.stderr and "Traceback" not in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1
            assert out.stderr.startswith("lmforge: error: ")
    finally:
        busy.close()
