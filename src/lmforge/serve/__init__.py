"""Serving: an OpenAI-compatible HTTP server over continuous batching, and a chat page."""

from lmforge.serve.app import create_app
from lmforge.serve.backend import Backend, Limits
from lmforge.serve.server import make_server

__all__ = ["Backend", "Limits", "create_app", "make_server"]
