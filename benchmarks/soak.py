"""A loopback soak of `lmforge serve`: N minutes of mixed requests, then the verdict.

The server runs as `lmforge serve` in a subprocess on 127.0.0.1; C clients (httpx's async
client) each send, one after another, a random mix of:

    chat, chat_stream               /v1/chat/completions, whole and streamed (include_usage)
    completion, completion_stream   /v1/completions, sometimes n = 2, logprobs, stop strings,
                                    logit_bias, best_of (whole ones)
    score                           the prompt scored: echo, logprobs, max_tokens 0
    cancel                          a stream left after 1-3 chunks (the slot must be freed)
    bad                             malformed JSON, wrong type, negative max_tokens, unknown
                                    model or path, a prompt over the context, a body over
                                    the limit: each must get its own 4xx and OpenAI's
                                    error object
    health, metrics                 GET /health, /metrics

A request fails when the status is not the expected one, a response lacks what the API
defines (choices, finish_reason, usage that adds up, `data: [DONE]`), or it times out.
The server's resident memory (/proc/PID/status VmRSS) is read every second; the growth is
the final RSS over the RSS at the end of the warm-up (the first 10%, at least 3 s). At the
end: no request left in flight and the batch empty (the cancelled slots were freed), then
Ctrl-C (SIGINT) must drain and exit 0. It stops by itself: the mix runs for the duration
asked, every request has a timeout, and the whole is bounded.

Pass: 0 failed requests, RSS growth <= 10%, slots freed, exit 0 (the script exits 1
otherwise). Prints a table, then one JSON line.

    .venv/bin/python benchmarks/soak.py                      # 10 minutes on runs/demo
    .venv/bin/python benchmarks/soak.py --minutes 1 --clients 4
    tests/serve/test_soak.py runs it for 30 s on a tiny model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BODY_LIMIT = 65_536  # the server's --max-body-bytes here: a 413 costs little to provoke

CHAT = ["hello there", "how fare you?", "tell me a story", "what is the hour?", "be brief"]
PROMPTS = ["ROMEO:\n", "USER: good day", "First Citizen:\n", "The king", "hello"]
STOPS = [None, "\n", ["e", "zz"], "the"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return "unknown CPU"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Failure(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def check_usage(usage: dict | None, n: int, max_tokens: int) -> None:
    expect(isinstance(usage, dict), f"no usage: {usage!r}")
    p, c, t = usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    expect(p > 0 and 0 <= c <= n * max_tokens and t == p + c, f"usage does not add up: {usage}")


class Soak:
    def __init__(self, url: str, model: str, context: int, rng: random.Random):
        self.url, self.model, self.context, self.rng = url, model, context, rng

    def sampling(self) -> dict:
        r = self.rng
        body = {"max_tokens": r.randint(1, 32), "temperature": r.choice([0, 0.7, 1.0])}
        if r.random() < 0.3:
            body["top_p"] = 0.9
        if r.random() < 0.3:
            body["seed"] = r.randint(0, 10**6)
        if r.random() < 0.3:
            body["stop"] = r.choice(STOPS)
        if r.random() < 0.2:
            body["presence_penalty"] = 0.5
        return body

    def chat_body(self, stream: bool) -> dict:
        body = {"model": self.model, **self.sampling(), "stream": stream,
                "messages": [{"role": "user", "content": self.rng.choice(CHAT)}]}  # fmt: skip
        if self.rng.random() < 0.2:
            body["logprobs"], body["top_logprobs"] = True, 2
        return body

    def completion_body(self, stream: bool) -> dict:
        body = {"model": self.model, **self.sampling(), "stream": stream,
                "prompt": self.rng.choice(PROMPTS), "n": self.rng.choice([1, 1, 2])}  # fmt: skip
        if self.rng.random() < 0.2:
            body["logprobs"] = 1
        if self.rng.random() < 0.1:  # ban or favour a token
            body["logit_bias"] = {str(self.rng.randint(0, 20)): self.rng.choice([-100, 5])}
        if not stream and self.rng.random() < 0.1:
            body["best_of"] = body["n"] + 1
        return body

    async def score(self, client) -> None:
        """echo + logprobs + max_tokens 0: the prompt scored, nothing generated."""
        body = {"model": self.model, "prompt": self.rng.choice(PROMPTS), "echo": True,
                "logprobs": 1, "max_tokens": 0}  # fmt: skip
        r = await client.post(self.url + "/v1/completions", json=body)
        expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text[:200]}")
        out = r.json()
        ch, usage = out["choices"][0], out["usage"]
        lp = ch["logprobs"]
        expect(ch["finish_reason"] == "length", f"finish_reason {ch['finish_reason']}")
        expect(usage["completion_tokens"] == 0, f"generated tokens: {usage}")
        expect(len(lp["tokens"]) == usage["prompt_tokens"], "not one entry per prompt token")
        expect(lp["token_logprobs"][0] is None, "the first prompt token has a logprob")
        expect(all(x <= 0 for x in lp["token_logprobs"][1:]), "a logprob above 0")

    # -- the kinds ----------------------------------------------------------------------

    async def whole(self, client, path: str, body: dict, chat: bool) -> None:
        r = await client.post(self.url + path, json=body)
        expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text[:200]}")
        out = r.json()
        n = body.get("n", 1)
        expect(len(out["choices"]) == n, f"{len(out['choices'])} choices, asked {n}")
        for ch in out["choices"]:
            expect(ch["finish_reason"] in ("stop", "length"), f"finish_reason {ch}")
            text = ch["message"]["content"] if chat else ch["text"]
            expect(isinstance(text, str), f"no text: {ch}")
        check_usage(out.get("usage"), body.get("best_of") or n, body["max_tokens"])

    async def streamed(self, client, path: str, body: dict, chat: bool) -> None:
        body = {**body, "stream_options": {"include_usage": True}}
        n = body.get("n", 1)
        reasons, usage, done = {}, None, False
        async with client.stream("POST", self.url + path, json=body) as r:
            expect(r.status_code == 200, f"HTTP {r.status_code}")
            async for line in r.aiter_lines():
                if not line:
                    continue
                expect(line.startswith("data: "), f"not an SSE data line: {line[:80]!r}")
                expect(not done, "data after [DONE]")
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                expect("error" not in chunk, f"error in the stream: {chunk}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for ch in chunk["choices"]:
                    if ch["finish_reason"] is not None:
                        reasons[ch["index"]] = ch["finish_reason"]
        expect(done, "the stream ended without data: [DONE]")
        expect(sorted(reasons) == list(range(n)), f"finish reasons {reasons} for n={n}")
        expect(set(reasons.values()) <= {"stop", "length"}, f"finish reasons {reasons}")
        check_usage(usage, n, body["max_tokens"])

    async def cancel(self, client) -> None:
        body = {**self.completion_body(True), "max_tokens": 64, "n": 1, "stop": None}
        keep = self.rng.randint(1, 3)
        async with client.stream("POST", self.url + "/v1/completions", json=body) as r:
            expect(r.status_code == 200, f"HTTP {r.status_code}")
            seen = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen >= keep:
                        break  # leaving the block closes the connection mid-stream

    async def bad(self, client) -> str:
        m = self.model
        over = " hello" * (self.context + 8)
        cases = [
            ("malformed JSON", b'{"model": "' + m.encode() + b'", "prompt": ', 400),
            ("wrong type", {"model": m, "prompt": "hi", "max_tokens": "many"}, 400),
            ("negative max_tokens", {"model": m, "prompt": "hi", "max_tokens": -1}, 400),
            ("unknown model", {"model": "no-such-model", "prompt": "hi"}, 404),
            ("over the context", {"model": m, "prompt": over}, 400),
            ("body over the limit", {"model": m, "prompt": "a" * (BODY_LIMIT + 1000)}, 413),
            ("unknown path", None, 404),
        ]
        name, body, status = self.rng.choice(cases)
        if body is None:
            r = await client.post(self.url + "/v1/nowhere", json={})
        else:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers = {"content-type": "application/json"}
            r = await client.post(self.url + "/v1/completions", content=content, headers=headers)
        expect(r.status_code == status, f"{name}: HTTP {r.status_code}, expected {status}")
        error = r.json().get("error")
        expect(
            isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error),
            f"{name}: not an OpenAI error object: {r.text[:200]}",
        )
        return name

    async def one(self, client, kind: str) -> None:
        if kind == "chat":
            await self.whole(client, "/v1/chat/completions", self.chat_body(False), True)
        elif kind == "chat_stream":
            await self.streamed(client, "/v1/chat/completions", self.chat_body(True), True)
        elif kind == "completion":
            await self.whole(client, "/v1/completions", self.completion_body(False), False)
        elif kind == "completion_stream":
            await self.streamed(client, "/v1/completions", self.completion_body(True), False)
        elif kind == "cancel":
            await self.cancel(client)
        elif kind == "score":
            await self.score(client)
        elif kind == "bad":
            await self.bad(client)
        else:
            r = await client.get(self.url + "/" + kind)
            expect(r.status_code == 200, f"/{kind}: HTTP {r.status_code}")


MIX = {"chat": 3, "chat_stream": 3, "completion": 3, "completion_stream": 3, "cancel": 2,
       "score": 1, "bad": 2, "health": 0.5, "metrics": 0.5}  # fmt: skip


async def soak(url, model, context, pid, seconds, clients, seed) -> dict:
    stats = defaultdict(lambda: {"ok": 0, "failed": 0, "seconds": 0.0})
    failures: list[str] = []
    rss: list[tuple[float, int]] = []
    start = time.monotonic()
    end = start + seconds
    warm_end = start + max(3.0, 0.1 * seconds)
    baseline = None
    limits = httpx.Limits(max_connections=clients + 4)

    async def sample_rss():
        nonlocal baseline
        while True:
            now = time.monotonic()
            rss.append((now - start, rss_bytes(pid)))
            if baseline is None and now >= warm_end:
                baseline = rss[-1][1]
            await asyncio.sleep(1.0)

    async def worker(k: int):
        s = Soak(url, model, context, random.Random(seed * 1000 + k))
        kinds, weights = list(MIX), list(MIX.values())
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
            while time.monotonic() < end:
                kind = s.rng.choices(kinds, weights)[0]
                t = time.perf_counter()
                try:
                    await asyncio.wait_for(s.one(client, kind), 90)
                    stats[kind]["ok"] += 1
                except Exception as e:  # every way a request can go wrong counts
                    stats[kind]["failed"] += 1
                    failures.append(f"{kind}: {type(e).__name__}: {e}"[:300])
                stats[kind]["seconds"] += time.perf_counter() - t

    sampler = asyncio.create_task(sample_rss())
    try:
        # bounded: the duration, plus one request's timeout for the last ones to finish
        await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(clients))), seconds + 120)
    finally:
        sampler.cancel()
    if baseline is None:
        baseline = rss[0][1] if rss else rss_bytes(pid)
    return {"stats": dict(stats), "failures": failures, "rss": rss, "baseline": baseline}


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def settled(url: str, timeout: float = 15.0) -> bool:
    """No request in flight, no sequence running or waiting: every slot was freed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics", timeout=10).text
        gauges = [metric(text, f"lmforge_{g}") for g in ("requests_in_flight", "batch_size",
                                                         "queue_depth")]  # fmt: skip
        if gauges == [0, 0, 0]:
            return True
        time.sleep(0.2)
    return False


def start_server(model: str, precision: str, max_batch: int, log) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "lmforge", "serve", model, "--port", "0", "--name", "soak",
           "--device", "cpu", "--precision", precision, "--max-batch", str(max_batch),
           "--max-body-bytes", str(BODY_LIMIT)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    line = proc.stdout.readline()  # "lmforge serve: soak (generation) at http://...:PORT/ ..."
    if " at http://" not in line:
        proc.kill()
        log.seek(0)
        raise SystemExit(f"the server did not start: {line}{log.read()[-2000:]}")
    url = line.split(" at ")[1].split()[0].rstrip("/").replace("localhost", "127.0.0.1")
    return proc, url


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "demo"), help="decoder directory")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=None, help="instead of --minutes")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-growth", type=float, default=0.10, help="RSS growth allowed")
    args = p.parse_args()
    seconds = args.seconds if args.seconds is not None else 60 * args.minutes

    with tempfile.TemporaryFile("w+") as log:
        proc, url = start_server(args.model, args.precision, args.max_batch, log)
        try:
            card = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]
            print(f"CPU: {cpu_name()}; soaking {url} ({args.model}, context "
                  f"{card['context_length']}) for {seconds:.0f} s with {args.clients} clients",
                  flush=True)  # fmt: skip
            out = asyncio.run(soak(url, "soak", card["context_length"], proc.pid, seconds,
                                   args.clients, args.seed))  # fmt: skip
            freed = settled(url)
            final = rss_bytes(proc.pid)
            proc.send_signal(signal.SIGINT)  # Ctrl-C: drain, then exit 0
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        server_log = log.read()

    stats, baseline = out["stats"], out["baseline"]
    peak = max(r for _, r in out["rss"]) if out["rss"] else final
    growth = (final - baseline) / baseline if baseline else float("nan")
    total_ok = sum(s["ok"] for s in stats.values())
    total_failed = sum(s["failed"] for s in stats.values())
    print(f"\n{'kind':<18} {'ok':>6} {'failed':>6} {'mean s':>7}")
    for kind in MIX:
        s = stats.get(kind, {"ok": 0, "failed": 0, "seconds": 0.0})
        n = s["ok"] + s["failed"]
        mean = s["seconds"] / n if n else 0.0
        print(f"{kind:<18} {s['ok']:>6} {s['failed']:>6} {mean:>7.3f}")
    print(f"{'all':<18} {total_ok:>6} {total_failed:>6}")
    mb = 1024 * 1024
    print(f"server RSS: {baseline / mb:.1f} MB after warm-up, peak {peak / mb:.1f}, "
          f"final {final / mb:.1f} MB: growth {100 * growth:+.1f}%")  # fmt: skip
    print(f"slots freed at the end: {freed}; exit status after Ctrl-C: {code}")
    for f in out["failures"][:10]:
        print(f"  failed: {f}")
    if code != 0:
        print(server_log[-2000:])
    passed = total_failed == 0 and growth <= args.max_growth and freed and code == 0
    print(json.dumps({
        "benchmark": "soak", "cpu": cpu_name(), "model": args.model, "seconds": seconds,
        "clients": args.clients, "requests": total_ok + total_failed, "failed": total_failed,
        "by_kind": {k: {"ok": v["ok"], "failed": v["failed"]} for k, v in stats.items()},
        "rss_mb": {"baseline": round(baseline / mb, 1), "peak": round(peak / mb, 1),
                   "final": round(final / mb, 1)},
        "rss_growth": round(growth, 4), "slots_freed": freed, "exit_code": code,
        "failures": out["failures"][:10], "passed": passed,
    }))  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
