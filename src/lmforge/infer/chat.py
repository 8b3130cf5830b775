"""Chat: a conversation rendered into one prompt by a chat template, as Hugging Face does.

A chat template is a Jinja template over `messages` (each a dict with `role` and `content`)
and `add_generation_prompt`; it lives with the model, in `chat_template.jinja` or as
`chat_template` in `tokenizer_config.json` (where Hugging Face keeps it). A model without
one gets `DEFAULT_TEMPLATE`, plain "ROLE: text" turns, and generation stops when the model
starts the user's next turn (`DEFAULT_STOP`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmforge.errors import LmforgeError

TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
DEFAULT_STOP = ["\nUSER:", "\nSYSTEM:"]


def load_chat_template(directory: str | Path) -> str | None:
    """The model directory's chat template, or None if it has none."""
    directory = Path(directory)
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text("utf-8")
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text("utf-8")).get("chat_template")
        except ValueError as e:
            raise LmforgeError(f"{config} is not valid JSON ({e}); fix or delete it") from None
        if isinstance(template, list):  # several named templates: take the default one
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        return template
    return None


def render_chat(
    template: str, messages: list[dict[str, str]], add_generation_prompt: bool = True, **extra
) -> str:
    """The conversation as one prompt string. Rendering is sandboxed: a template from a
    downloaded model cannot reach Python."""
    try:
        return _compiled(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **extra
        )
    except jinja2.exceptions.TemplateError as e:
        raise LmforgeError(f"the chat template failed: {e}") from None


@functools.lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    """The template compiled once (milliseconds each time; fine-tuning renders thousands)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)
