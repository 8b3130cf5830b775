"""`lmforge.pipeline(task, model=DIR)`: a fine-tuned model as a function, in the shapes
Hugging Face's pipelines return.

    classify = pipeline("classification", model="runs/genre")
    classify("Now is the winter of our discontent")   # {"label": "histories", "score": 0.71}
    classify(["...", "..."], top_k=3)                 # per text, the 3 best labels
    qa = pipeline("qa", model="runs/speaker-qa")
    qa(question="Who says ...?", context="...")       # {"answer", "score", "start", "end"}
    translate = pipeline("translation", model="runs/modernize")
    translate("Thou art a villain.")                  # {"translation_text": "You are a villain."}
    chat = pipeline("chat", model="runs/chat-demo")
    chat([{"role": "user", "content": "Who speaks next?..."}])  # {"role": "assistant", ...}

One input gives one result; a list gives a list.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.tasks import get_task, load_task_model


class Pipeline:
    def __init__(self, task_name: str, model: str | Path, device: str = "cpu"):
        from lmforge.device import pick_device

        self.task, self.model = load_task_model(task_name, model, pick_device(device))
        self.name = self.task.name

    def __call__(self, inputs=None, *, question=None, context=None, top_k=None, batch_size=32):
        if self.name == "qa":
            return self._qa(inputs, question, context, batch_size)
        if self.name == "chat":
            return self._chat(inputs)
        if inputs is None:
            raise LmforgeError(f"the {self.name} pipeline needs a text or a list of texts")
        single = isinstance(inputs, str | tuple)
        texts = [inputs] if single else list(inputs)
        if self.name == "classification":
            results = self._classify(texts, top_k, batch_size)
        else:
            role = self.task.source_role
            results = self.task.predict(self.model, [{role: _text(t)} for t in texts], batch_size)
        return results[0] if single else results

    def _classify(self, texts, top_k, batch_size):
        pairs = [(t, None) if isinstance(t, str) else tuple(t) for t in texts]
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(x, str | None) for x in pair):
                raise LmforgeError(f"classify a text or a (text, text_b) pair, not {pair!r}")
        probs = self.task.probabilities(self.model, [(_text(a), b) for a, b in pairs], batch_size)
        labels = self.task.labels
        out = []
        for row in probs:
            ranked = [
                {"label": labels[int(i)], "score": float(row[i])}
                for i in row.argsort(descending=True)
            ]
            out.append(ranked[0] if top_k is None else ranked[:top_k])
        return out

    def _qa(self, inputs, question, context, batch_size):
        if inputs is None:
            if question is None or context is None:
                raise LmforgeError("the qa pipeline needs question= and context=")
            inputs = {"question": question, "context": context}
        single = isinstance(inputs, dict)
        items = [inputs] if single else list(inputs)
        records = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not {"question", "context"} <= item.keys():
                raise LmforgeError(f"qa input {n} needs 'question' and 'context'")
            records.append({"question": _text(item["question"]), "context": _text(item["context"])})
        results = self.task.predict(self.model, records, batch_size)
        return results[0] if single else results

    def _chat(self, inputs):
        """A conversation (a list of messages, or one user text) -> the assistant's reply."""
        from lmforge.tasks.chat import check_conversation

        if isinstance(inputs, str):
            inputs = [{"role": "user", "content": inputs}]
        reply = self.task.reply(self.model, check_conversation(inputs, "the chat input"))
        return {"role": "assistant", "content": reply}


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LmforgeError(f"expected a non-empty text, got {value!r}")
    return value


def pipeline(task: str, model: str | Path, device: str = "cpu") -> Pipeline:
    """A fine-tuned model directory as a callable for `task` (classification or sentiment,
    qa, translation, summarization, chat); the directory must have been fine-tuned for it."""
    get_task(task)  # an unknown task name fails before anything loads
    return Pipeline(task, model, device)
