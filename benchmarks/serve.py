"""Serving under load: `lmforge serve` (continuous batching) with 1, 4, 8 and 16 concurrent
streaming clients, and `transformers serve` on the same weights, in one run.

For each model, a fixed list of completion requests (greedy, different prompts and
lengths) is sent over loopback by C clients at once, each taking the next request when
its last one ends; C = 1 is the same requests served one at a time, the reference of the
ratios. From the arrival time of every streamed chunk, on the client side:

    throughput   output tokens of all requests / wall time of the whole list
    TTFT         request sent -> first text chunk (p50, p99)
    ITL          between consecutive text chunks of one request (p50, p99), pooled

Goals (issue 15): at 8 clients >= 4x the tokens/s of C = 1, with p99 ITL < 2x C = 1's;
and >= 2x the tokens/s of `transformers serve` (its OpenAI-compatible server, run offline
on `lmforge convert --to hf` of the same directory, fp32 like ours) at 8 clients. Where
the installed transformers has no `serve` command, the reference is a FastAPI wrapper
around `model.generate` in this file (`--wrapper`), one request at a time.

Models: the demo run (runs/demo, if it is there) and a GPT-2-124M-shaped model with random
weights (12 layers, width 768, 12 heads, context 1024, a 50257-token byte-level BPE
trained here in seconds). Random weights make text without meaning, not slower or faster
text. Both servers are subprocesses on 127.0.0.1; the load is httpx's async client, every
request with a timeout and each scenario with a time limit. Counts are kept small: the
machine this was written on has 2 cores, shared by the servers and the load. Each server
gets `--threads` torch threads (1 by default, the same for both): on 2 cores that the load
generator and other jobs share, a 2-thread OpenMP team waits for a core at every parallel
region, which made single decode steps take up to hundreds of milliseconds here.

    .venv/bin/python benchmarks/serve.py                      # ~6-8 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --precision auto --reference none   # the default
    .venv/bin/python benchmarks/serve.py --models demo --requests 16
    .venv/bin/python benchmarks/serve.py --reference none     # ours only

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text()
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        "unknown CPU",
    )
    flags = set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())
    extra = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} cores" + (f" ({', '.join(extra)})" if extra else "")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- the models --------------------------------------------------------------------------


def gpt2_shaped(folder: Path) -> Path:
    """A GPT-2-124M-shaped model with random weights and a 50257-token BPE (Shakespeare
    plus random letter words, so that there are enough merges to fill the vocabulary)."""
    import torch

    from lmforge.config import ModelConfig
    from lmforge.models import Transformer, save_model_dir
    from lmforge.text.shakespeare import load_shakespeare
    from lmforge.tokenizers import Tokenizer

    if (folder / "model.safetensors").is_file():
        return folder
    texts = [d.text for d in load_shakespeare()[0]]
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(60_000))
    texts.append(" ".join(words))
    tok = Tokenizer.train(texts, "bpe", vocab_size=50257, pattern="gpt2")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    model = Transformer(config)
    save_model_dir(model, folder)
    tok.save(folder)
    return folder


def to_hf(src: Path, dst: Path) -> Path:
    if not (dst / "config.json").is_file():
        cmd = [sys.executable, "-m", "lmforge", "convert", "--to", "hf", str(src), str(dst)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dst


PROMPTS = [
    "ROMEO:\nBut soft, what light",
    "JULIET:\nO Romeo, Romeo",
    "HAMLET:\nTo be, or not to be",
    "KING LEAR:\nBlow, winds, and crack your cheeks",
    "MACBETH:\nIs this a dagger which I see",
    "PORTIA:\nThe quality of mercy",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "OTHELLO:\nIt is the cause",
]


@dataclass
class Workload:
    name: str
    directory: Path
    requests: list[tuple[str, int]]  # (prompt, max_tokens)
    hf: Path | None = None


def workload(name: str, directory: Path, count: int, tokens: int) -> Workload:
    """`count` requests: the prompts in turn, max_tokens from tokens/2 to tokens."""
    rng = random.Random(1)
    reqs = [(PROMPTS[i % len(PROMPTS)], rng.randint(tokens // 2, tokens)) for i in range(count)]
    return Workload(name, directory, reqs)


# -- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


THREADS: dict[str, str] = {}  # OMP/MKL thread counts for both servers (--threads)


class Server:
    """A server in a subprocess on 127.0.0.1, stopped with SIGINT (then killed)."""

    def __init__(self, cmd: list[str], port: int, model: str, label: str, env=None):
        self.label, self.model, self.url = label, model, f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        env = {**os.environ, **THREADS, **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{label} exited at start:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{label} did not answer /health within 300 s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def lmforge_server(w: Workload, precision: str, max_batch: int) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "lmforge", "serve", str(w.directory), "--port", str(port),
           "--name", w.name, "--device", "cpu", "--precision", precision,
           "--max-batch", str(max_batch)]  # fmt: skip
    return Server(cmd, port, w.name, "lmforge serve")


def transformers_server(w: Workload, continuous: bool = False) -> Server:
    """transformers serve; `continuous`: with its --continuous-batching (paged attention)."""
    port = free_port()
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    cmd = [exe, "serve", str(w.hf), "--device", "cpu", "--dtype", "float32",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    label = "transformers serve"
    if continuous:
        cmd.append("--continuous-batching")
        label = "transformers serve cb"
    return Server(cmd, port, str(w.hf), label, offline)


def wrapper_server(w: Workload) -> Server:
    port = free_port()
    cmd = [sys.executable, __file__, "--wrapper", str(w.hf), "--port", str(port)]
    return Server(cmd, port, "hf", "generate() wrapper")


def has_transformers_serve() -> bool:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        return False
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=120)
    return out.returncode == 0 and "/v1/completions" in out.stdout


# -- the load ----------------------------------------------------------------------------


@dataclass
class Result:
    sent: float
    stamps: list[float] = field(default_factory=list)  # arrival of each text chunk
    tokens: int = 0
    error: str | None = None


async def one_request(client, server: Server, prompt: str, max_tokens: int, usage: bool):
    body = {"model": server.model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "stream": True}  # fmt: skip
    if usage:
        body["stream_options"] = {"include_usage": True}
    r = Result(time.perf_counter())
    try:
        async with client.stream("POST", server.url + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                r.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return r
            counted, buffer, done = None, b"", False
            # raw bytes, cut at the blank line that ends each event: cheaper for the
            # load generator than a decoded line iterator (it shares the CPU)
            async for data in resp.aiter_raw():
                now = time.perf_counter()
                buffer += data.replace(b"\r\n", b"\n")
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data:"):
                        continue
                    payload = event[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    chunk = json.loads(payload)
                    if chunk.get("usage"):
                        counted = chunk["usage"]["completion_tokens"]
                    if any(c.get("text") for c in chunk.get("choices", [])):
                        r.stamps.append(now)
                if done:
                    break
            # without usage (the wrapper), count a text chunk as one token
            r.tokens = counted if counted is not None else len(r.stamps)
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        r.error = f"{type(e).__name__}: {e}"
    return r


async def run_load(server: Server, requests, clients: int, usage: bool, time_limit: float):
    """Every request once, `clients` at a time; (results, wall seconds, finished in time)."""
    todo = list(enumerate(requests))
    results: list[Result | None] = [None] * len(requests)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:

        async def worker():
            while todo:
                i, (prompt, n) = todo.pop(0)
                results[i] = await one_request(client, server, prompt, n, usage)

        start = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        done, pending = await asyncio.wait(tasks, timeout=time_limit)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - start
    return [r for r in results if r is not None], wall, not pending


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(results: list[Result], wall: float, complete: bool, total: int) -> dict:
    ok = [r for r in results if r.error is None]
    ttft = [r.stamps[0] - r.sent for r in ok if r.stamps]
    itl = [b - a for r in ok for a, b in zip(r.stamps, r.stamps[1:])]
    tokens = sum(r.tokens for r in ok)
    errors = [r.error for r in results if r.error is not None]
    return {
        "requests": len(ok),
        "asked": total,
        "complete": complete and len(ok) == total,
        "errors": len(errors) + (total - len(results)),
        "first_error": errors[0] if errors else None,
        "tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_p50_ms": round(1000 * percentile(ttft, 50), 1),
        "ttft_p99_ms": round(1000 * percentile(ttft, 99), 1),
        "itl_p50_ms": round(1000 * percentile(itl, 50), 2),
        "itl_p99_ms": round(1000 * percentile(itl, 99), 2),
    }


def measure(server: Server, w: Workload, clients: int, usage: bool, time_limit: float) -> dict:
    cpu = time.process_time()
    results, wall, complete = asyncio.run(run_load(server, w.requests, clients, usage, time_limit))
    row = summarize(results, wall, complete, len(w.requests))
    # the load generator's own CPU share: near 1 core, it (not the server) may be the limit
    client_cpu = (time.process_time() - cpu) / wall if wall > 0 else 0.0
    row.update(server=server.label, clients=clients, load_avg=load_average(),
               client_cpu=round(client_cpu, 2))  # fmt: skip
    return row


def warm_up(server: Server, w: Workload, usage: bool) -> None:
    """Two requests first: the first step of a fresh process pays one-off costs (oneDNN's
    kernel choice, allocator growth) that belong to no concurrency level."""
    asyncio.run(run_load(server, w.requests[:2], 2, usage, 300))


# -- the fallback reference: FastAPI around model.generate ---------------------------------


def wrapper_main(directory: str, port: int) -> None:
    """/v1/completions (streamed) and /health over transformers' `generate`, one request
    at a time (a lock), each token sent as it comes from a TextIteratorStreamer."""
    import threading

    import torch
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    def completions(body: dict):
        ids = tok(body["prompt"], return_tensors="pt")
        streamer = TextIteratorStreamer(tok, skip_prompt=True)

        def run():
            with lock, torch.no_grad():
                model.generate(**ids, max_new_tokens=body.get("max_tokens", 16),
                               do_sample=False, streamer=streamer,
                               pad_token_id=tok.eos_token_id or 0)  # fmt: skip

        threading.Thread(target=run, daemon=True).start()

        def events():
            for text in streamer:
                if text:
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the run -----------------------------------------------------------------------------

HEAD = (
    f"{'model':<10} {'server':<19} {'C':>3} {'req':>5} {'tokens':>6} {'s':>7} {'tok/s':>8} "
    f"{'x C=1':>6} {'TTFT p50':>9} {'p99':>8} {'ITL p50':>8} {'p99':>8} {'load':>5} {'cli':>4}"
)


def print_row(model: str, row: dict, base: float | None) -> None:
    ratio = f"{row['tokens_per_s'] / base:.2f}" if base else "-"
    print(
        f"{model:<10} {row['server']:<19} {row['clients']:>3} "
        f"{row['requests']:>2}/{row['asked']:<2} {row['tokens']:>6} {row['seconds']:>7.2f} "
        f"{row['tokens_per_s']:>8.1f} {ratio:>6} {row['ttft_p50_ms']:>7.0f}ms "
        f"{row['ttft_p99_ms']:>6.0f}ms {row['itl_p50_ms']:>6.1f}ms {row['itl_p99_ms']:>6.1f}ms "
        f"{row['load_avg']:>5.1f} {row['client_cpu']:>4.2f}",
        flush=True,
    )
    if row["first_error"]:
        print(f"    first error: {row['first_error']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo,gpt2", help="demo, gpt2 (comma separated)")
    p.add_argument("--demo", default=str(ROOT / "runs" / "demo"), help="the demo run")
    p.add_argument("--clients", default="1,4,8,16")
    p.add_argument("--requests", type=int, default=None, help="default: demo 96, gpt2 48")
    p.add_argument("--tokens", type=int, default=None, help="max_tokens up to (demo 64, gpt2 32)")
    p.add_argument("--reference", default="auto",
                   choices=["auto", "transformers", "transformers-cb", "wrapper", "none"],
                   help="transformers-cb: transformers serve --continuous-batching")  # fmt: skip
    p.add_argument("--reference-clients", default="1,8")
    p.add_argument("--precision", default="fp32", help="lmforge's (fp32: as the reference)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both servers")
    p.add_argument("--time-limit", type=float, default=300, help="seconds per scenario")
    p.add_argument("--cache", default=None, help="keep the made models here (default: temp)")
    p.add_argument("--wrapper", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.wrapper:
        return wrapper_main(args.wrapper, args.port)

    THREADS.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    clients = [int(c) for c in args.clients.split(",")]
    ref_clients = [int(c) for c in args.reference_clients.split(",")]
    reference = args.reference
    if reference == "auto":
        reference = "transformers" if has_transformers_serve() else "wrapper"
    tmp = Path(args.cache or tempfile.mkdtemp(prefix="lmforge-bench-serve-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}; load average at start {load_average():.2f}", flush=True)
    print(f"reference: {reference}; lmforge precision {args.precision}; {args.threads} torch "
          "thread(s) in each server", flush=True)  # fmt: skip

    workloads = []
    for name in args.models.split(","):
        if name == "demo":
            demo = Path(args.demo)
            if not (demo / "model.safetensors").is_file():
                print(f"(no {demo}/model.safetensors: `make demo` first; demo skipped)")
                continue
            w = workload("demo", demo, args.requests or 96, args.tokens or 64)
        elif name == "gpt2":
            # 48: with 16, 8 clients made two rounds, and the last one's ramp-down (fewer
            # than 8 in the batch) was a third of the run
            w = workload("gpt2-124m", gpt2_shaped(tmp / "gpt2-124m"), args.requests or 48,
                         args.tokens or 32)  # fmt: skip
        else:
            raise SystemExit(f"unknown model {name!r}: demo or gpt2")
        if reference != "none":
            w.hf = to_hf(w.directory, tmp / f"{w.name}-hf")
        workloads.append(w)

    report = {"benchmark": "serve", "cpu": cpu_name(), "reference": reference,
              "precision": args.precision, "threads": args.threads, "models": {}}  # fmt: skip
    print()
    print(HEAD)
    for w in workloads:
        rows = []
        server = lmforge_server(w, args.precision, args.max_batch)
        try:
            warm_up(server, w, True)
            base = None
            for c in clients:
                row = measure(server, w, c, True, args.time_limit)
                base = base or (row["tokens_per_s"] if c == 1 else None)
                print_row(w.name, row, base)
                rows.append(row)
        finally:
            server.stop()
        ref_rows = []
        if reference != "none":
            if reference.startswith("transformers"):
                ref = transformers_server(w, continuous=reference == "transformers-cb")
            else:
                ref = wrapper_server(w)
            try:
                usage = reference.startswith("transformers")  # it reports usage when streaming
                warm_up(ref, w, usage)
                for c in ref_clients:
                    row = measure(ref, w, c, usage, args.time_limit)
                    print_row(w.name, row, None)
                    ref_rows.append(row)
            finally:
                ref.stop()
        report["models"][w.name] = verdict(rows, ref_rows)
        shown = {k: v for k, v in report["models"][w.name].items() if not k.endswith("rows")}
        print(f"{w.name}: {json.dumps(shown)}", flush=True)
    if not args.cache:
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_avg_end"] = load_average()
    print(json.dumps(report))


def verdict(rows: list[dict], ref_rows: list[dict]) -> dict:
    by_c = {r["clients"]: r for r in rows}
    out: dict = {"rows": rows, "reference_rows": ref_rows}
    one, eight = by_c.get(1), by_c.get(8)
    if one and eight and one["tokens_per_s"]:
        out["speedup_8_vs_1"] = round(eight["tokens_per_s"] / one["tokens_per_s"], 2)
        out["itl_p99_ratio_8_vs_1"] = round(eight["itl_p99_ms"] / one["itl_p99_ms"], 2)
        out["goal_speedup_4x"] = out["speedup_8_vs_1"] >= 4
        out["goal_itl_under_2x"] = out["itl_p99_ratio_8_vs_1"] < 2
    ref8 = next((r for r in ref_rows if r["clients"] == 8), None)
    if eight and ref8 and ref8["tokens_per_s"]:
        out["vs_reference_8"] = round(eight["tokens_per_s"] / ref8["tokens_per_s"], 2)
        out["goal_2x_reference"] = out["vs_reference_8"] >= 2
    return out


if __name__ == "__main__":
    main()
