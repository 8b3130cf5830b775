"""The tasks by name (and their aliases), and a fine-tuned directory's task and model: the
one module that knows every task, so that the tasks themselves import none of it."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.infer import load_model_and_tokenizer
from lmforge.tasks.base import Task, task_settings
from lmforge.tasks.chat import Chat
from lmforge.tasks.classification import Classification
from lmforge.tasks.qa import QuestionAnswering
from lmforge.tasks.seq2seq import Summarization, Translation

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "qa": QuestionAnswering,
    "translation": Translation,
    "summarization": Summarization,
    "chat": Chat,
}
ALIASES = {
    "sentiment": "classification",
    "sentiment-analysis": "classification",
    "text-classification": "classification",
    "question-answering": "qa",
}


def get_task(name: str) -> type[Task]:
    name = ALIASES.get(name, name)
    if name not in TASKS:
        choices = ", ".join([*TASKS, *ALIASES])
        raise LmforgeError(f"unknown task '{name}'; choose one of {choices}")
    return TASKS[name]


def load_task_model(task_name: str, directory: str | Path, device="cpu"):
    """(task, model) of a directory fine-tuned for `task_name`, or a clear error. For chat,
    a base language model too: its loss on assistant tokens before any instruction tuning."""
    cls = get_task(task_name)
    settings = task_settings(directory)
    if settings is None and cls is Chat:  # a base language model is scored as it is
        settings = cls.adopt_base(directory, {"task": cls.name, "fields": {}})
    if settings is None or settings.get("task") != cls.name:
        found = f"was fine-tuned for {settings['task']}" if settings else "has no task head"
        raise LmforgeError(
            f"{directory} {found}, not {cls.name}; fine-tune it first: "
            f"lmforge finetune {cls.name} --model {directory} --train FILE --output DIR"
        )
    model, tokenizer = load_model_and_tokenizer(directory, device)
    if model.config.head != cls.head:
        raise LmforgeError(
            f"{directory} has head {model.config.head}, but {cls.name} needs {cls.head}"
        )
    return cls(tokenizer, model.config, settings), model
