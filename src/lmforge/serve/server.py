"""Running the app under uvicorn, with a graceful Ctrl-C.

The first SIGINT or SIGTERM starts draining: requests in progress run to their end while
new /v1 requests get 503 and /health says "draining"; when none is left (or after
`drain_timeout` seconds) uvicorn closes the connections and the scheduler's thread ends.
A second Ctrl-C quits at once.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import uvicorn

from lmforge.errors import LmforgeError
from lmforge.serve.app import create_app
from lmforge.serve.backend import Backend


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state, drain_timeout: float = 60.0, on_ready=None):
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self.on_ready = on_ready

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.on_ready is not None and self.started:
            self.on_ready(self)

    def handle_exit(self, sig, frame) -> None:  # uvicorn's signal handler, main thread
        if self.state.draining:  # the second signal: now
            self.force_exit = self.should_exit = True
            return
        self.state.draining = True
        print("lmforge serve: draining (Ctrl-C again to quit now)", file=sys.stderr, flush=True)
        threading.Thread(target=self._drain, name="lmforge-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self.state.backend.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.should_exit = True

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self.servers[0].sockets[0].getsockname()[1]


def make_server(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "warning",
    drain_timeout: float = 60.0,
    on_ready=None,
) -> DrainingServer:
    app = create_app(backend, api_key)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10
    )
    return DrainingServer(config, app.state.lmforge, drain_timeout, on_ready)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), for uvicorn to serve on: a port in use or an unknown
    host is one clear error before the model is loaded, not uvicorn's log line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise LmforgeError(f"could not listen on {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = "; pick another --port (0: any free one)" if e.errno == 98 else ""
        raise LmforgeError(f"could not listen on {host}:{port}: {e.strerror or e}{hint}") from None
    sock.set_inheritable(True)
    return sock
