"""Applications: fine-tuning, evaluation and pipelines for the mission's five tasks.

    classification (and sentiment analysis)  tasks/classification.py
    qa (extractive question answering)        tasks/qa.py
    translation, summarization                tasks/seq2seq.py

`finetune` (tasks/finetune.py) trains a base model on a task; `pipeline` (tasks/pipeline.py)
runs a fine-tuned one; tasks/shakespeare.py makes the demo datasets from the built-in corpus.
"""

from __future__ import annotations

from lmforge.tasks.base import Task, with_head, with_settings
from lmforge.tasks.registry import TASKS, get_task, load_task_model

__all__ = ["TASKS", "Task", "get_task", "load_task_model", "with_head", "with_settings"]
