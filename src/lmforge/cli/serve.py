"""`lmforge serve MODEL_DIR [--port 8000]`: OpenAI's API, a chat page, /health, /metrics."""

from __future__ import annotations

import os
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over OpenAI's HTTP API (continuous batching) with a chat page"
    )
    p.add_argument(
        "model", help="run or model directory (decoder: generation; encoder: embeddings)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--name", default=None, help="model name in the API (default: directory name)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LMFORGE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 (default: $LMFORGE_API_KEY)",
    )
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoding together")
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=64,
        help="prompt tokens read per step, beside the running sequences' tokens: smaller keeps "
        "their inter-token latency steady, larger gives a long prompt its first token sooner",
    )
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="default: context - 1")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on a request's max_tokens")
    p.add_argument("--max-concurrent", type=int, default=64, help="requests at once (429 beyond)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="413 beyond")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8", "mixed"])
    p.add_argument("--log-level", default="warning", help="uvicorn's (info shows each request)")
    p.set_defaults(run=run)


def run(args, extra) -> int:
    from lmforge.errors import LmforgeError

    try:
        from lmforge.serve import Backend, Limits, make_server
    except ImportError as e:  # the serve extra: fastapi, uvicorn, prometheus-client
        raise LmforgeError(
            f"lmforge serve needs the package '{e.name}'; pip install 'lmforge[serve]'"
        ) from None

    for flag in ("max_batch", "prefill_chunk", "max_concurrent", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise LmforgeError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 <= args.port < 65536:
        raise LmforgeError(f"--port must be in 0..65535 (got {args.port})")
    from lmforge.serve.server import bind

    sock = bind(args.host, args.port)  # before loading: a busy port fails at once
    limits = Limits(
        args.max_prompt_tokens, args.max_tokens, args.max_concurrent, args.max_body_bytes
    )
    backend = Backend(
        args.model,
        args.name,
        args.device,
        args.precision,
        args.max_batch,
        args.prefill_chunk,
        limits,
    )

    def ready(server) -> None:
        host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
        url = f"http://{host}:{server.port}/"
        auth = ", API key required" if args.api_key else ""
        print(
            f"lmforge serve: {backend.name} ({backend.kind}) at {url}  "
            f"(OpenAI API at {url}v1{auth}; Ctrl-C stops)",
            flush=True,
        )

    server = make_server(
        backend, args.host, args.port, args.api_key, args.log_level, on_ready=ready
    )
    server.run(sockets=[sock])
    if not server.started:
        print(f"lmforge: error: could not serve on {args.host}:{args.port}", file=sys.stderr)
        return 2
    print("lmforge serve: stopped", file=sys.stderr)
    return 0
