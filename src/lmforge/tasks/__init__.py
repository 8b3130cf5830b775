"""Applications: fine-tuning, evaluation and pipelines for the mission's five tasks.

    classification (and sentiment analysis)  tasks/classification.py
    qa (extractive question answering)        tasks/qa.py
    translation, summarization                tasks/seq2seq.py

`finetune` (tasks/finetune.py) trains a base model on a task; `pipeline` (tasks/pipeline.py)
runs a fine-tuned one; tasks/shakespeare.py makes the demo datasets from the built-in corpus.
"""

from __future__ import annotations

from lmforge.errors import LmforgeError
from lmforge.tasks.base import Task, load_task_model, with_head
from lmforge.tasks.classification import Classification
from lmforge.tasks.qa import QuestionAnswering
from lmforge.tasks.seq2seq import Summarization, Translation

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "qa": QuestionAnswering,
    "translation": Translation,
    "summarization": Summarization,
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


__all__ = ["TASKS", "Task", "get_task", "load_task_model", "with_head"]
