"""lmforge: build language models by hand, from tokenizer to generation."""

__version__ = "0.1.0"

from lmforge.errors import LmforgeError  # noqa: E402

__all__ = ["LmforgeError", "__version__"]
