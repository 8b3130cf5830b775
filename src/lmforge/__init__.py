"""lmforge: build language models by hand, from tokenizer to generation."""

__version__ = "0.1.0"

from lmforge.errors import LmforgeError  # noqa: E402


def pipeline(task: str, model, device: str = "cpu"):
    """A fine-tuned model as a callable; see lmforge.tasks.pipeline. Imported on first use,
    so `import lmforge` stays light."""
    from lmforge.tasks.pipeline import pipeline as make

    return make(task, model, device)


__all__ = ["LmforgeError", "__version__", "pipeline"]
