"""A real server on 127.0.0.1 for the tests: uvicorn on a free port, in a thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models import Transformer, save_model_dir
from lmforge.serve import Backend, Limits, make_server
from lmforge.tokenizers import Tokenizer

TEXT = "USER: hello there\n\nASSISTANT: good day to you, sir. How fare you this morning?"


class Running:
    def __init__(self, backend: Backend, api_key: str | None = None):
        self.backend = backend
        self.server = make_server(backend, "127.0.0.1", 0, api_key)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.port}"

    @property
    def state(self):
        return self.server.state

    def client(self, api_key: str = "none", **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kwargs)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def sharp_char_model_dir(folder, block_size: int = 128):
    """A random 2-layer character model whose weight matrices are scaled up 8x: sharp
    distributions, so greedy text varies from token to token (the plain initialisation
    repeats one character) and ties between logits are unlikely."""
    tok = Tokenizer.train([TEXT], "char")
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    save_model_dir(model, folder)
    tok.save(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return sharp_char_model_dir(tmp_path_factory.mktemp("served") / "tiny")


def start(model_dir, api_key=None, **limits) -> Running:
    return Running(Backend(model_dir, "tiny", "cpu", "fp32", 8, 64, Limits(**limits)), api_key)


@pytest.fixture(scope="module")
def server(model_dir):
    running = start(model_dir)
    yield running
    running.close()
