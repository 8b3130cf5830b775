"""Extractive question answering, as BERT on SQuAD: the answer is a span of the context.

Input: the question, then the context (`[CLS] question [SEP] context [SEP]` with BERT's
template). A context longer than the window is cut into windows that overlap by `stride`
tokens, each paired with the question. The question-answering head gives every token a start
and an end logit; training targets the answer's first and last token in each window that holds
the whole answer, and the first token of the window (BERT's [CLS]) in windows that do not.
Prediction takes, over all windows, the span (start <= end, at most `max_answer_tokens` long,
inside the context) with the highest probability p(start) * p(end), each a softmax over the
window's context tokens, and maps it back to characters through the token offsets.

Metrics: SQuAD's exact match and token F1 against the best-matching gold answer, after
SQuAD's normalisation (lower case, no punctuation, no articles a/an/the, single spaces).
"""

from __future__ import annotations

import collections
import re
import string

import torch

from lmforge.errors import LmforgeError
from lmforge.tasks import records as r
from lmforge.tasks.base import Task
from lmforge.train.losses import span_loss


class QuestionAnswering(Task):
    name = "qa"
    head = "question-answering"
    metric = "f1"
    roles = {"context": r.text, "question": r.text, "answers": r.answers}
    optional = ("answers",)  # a pipeline call has none; training and scoring check for them

    @property
    def stride(self) -> int:
        return min(self.settings.get("stride") or 128, self.max_length // 4)

    @property
    def max_answer_tokens(self) -> int:
        return self.settings.get("max_answer_tokens") or 30

    def windows(self, question: str, context: str):
        enc = self.tokenizer.tokenize(
            question,
            context,
            max_length=self.max_length,
            stride=self.stride,
            truncation="only_second",
        )
        return [enc, *enc.overflowing]

    @staticmethod
    def check_answers(records: list[dict]) -> None:
        for rec in records:
            if "answers" not in rec:
                raise LmforgeError(f"{rec['_where']}: no field 'answers'")
            for answer in rec["answers"]:
                start, text = answer["answer_start"], answer["text"]
                found = rec["context"][start : start + len(text)]
                if found != text or not text.strip():
                    raise LmforgeError(
                        f"{rec['_where']}: answer {text!r} is not a span of the context at "
                        f"answer_start {start} (the context has {found!r} there)"
                    )

    def check_records(self, records: list[dict]) -> None:
        self.check_answers(records)

    def examples(self, records: list[dict]) -> list[dict]:
        self.check_answers(records)
        out = []
        for rec in records:
            answer = rec["answers"][0]
            first = answer["answer_start"]
            last = first + len(answer["text"])
            for w in self.windows(rec["question"], rec["context"]):
                context = [i for i, s in enumerate(w.sequence_ids) if s == 1]
                start = end = 0  # the answer is not (wholly) in this window
                if w.offsets[context[0]][0] <= first and last <= w.offsets[context[-1]][1]:
                    start = next(i for i in context if w.offsets[i][1] > first)
                    end = next(i for i in reversed(context) if w.offsets[i][0] < last)
                out.append(
                    {
                        "input_ids": w.ids,
                        "token_type_ids": w.type_ids,
                        "start": start,
                        "end": end,
                    }
                )
        return out

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.inputs(examples)
        if "start" in examples[0]:
            batch["start"] = torch.tensor([e["start"] for e in examples])
            batch["end"] = torch.tensor([e["end"] for e in examples])
        return batch

    def loss(self, model, batch):
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return span_loss(logits[..., 0], logits[..., 1], batch["start"], batch["end"])

    @torch.no_grad()
    def predict(self, model, records: list[dict], batch_size: int = 32) -> list[dict]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        windows = [
            (n, w)
            for n, rec in enumerate(records)
            for w in self.windows(rec["question"], rec["context"])
        ]
        best: dict[int, dict] = {}
        for first in range(0, len(windows), batch_size):
            chunk = windows[first : first + batch_size]
            rows = [{"input_ids": w.ids, "token_type_ids": w.type_ids} for _, w in chunk]
            batch = {k: v.to(device) for k, v in self.collate(rows).items()}
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            for (n, w), row in zip(chunk, logits.float().cpu(), strict=True):
                span = self._best_span(w, row, records[n]["context"])
                if span is not None and (n not in best or span["score"] > best[n]["score"]):
                    best[n] = span
        model.train(was_training)
        empty = {"answer": "", "score": 0.0, "start": 0, "end": 0}
        return [best.get(n, empty) for n in range(len(records))]

    def _best_span(self, window, logits: torch.Tensor, context: str) -> dict | None:
        positions = [i for i, s in enumerate(window.sequence_ids) if s == 1]
        if not positions:
            return None
        index = torch.tensor(positions)
        p_start = logits[index, 0].softmax(-1)
        p_end = logits[index, 1].softmax(-1)
        scores = p_start[:, None] * p_end[None, :]
        n = len(positions)
        allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(self.max_answer_tokens - 1)
        scores = scores.masked_fill(~allowed, -1.0)
        flat = int(scores.argmax())
        i, j = divmod(flat, n)
        start, end = window.offsets[positions[i]][0], window.offsets[positions[j]][1]
        text = context[start:end]
        start += len(text) - len(text.lstrip())  # byte-level BPE tokens carry their space
        text = text.strip()
        return {
            "answer": text,
            "score": float(scores[i, j]),
            "start": start,
            "end": start + len(text),
        }

    def score(self, predictions: list[dict], records: list[dict]) -> dict:
        self.check_answers(records)
        return squad_metrics(
            [p["answer"] for p in predictions],
            [[a["text"] for a in rec["answers"]] for rec in records],
        )


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation and the articles a/an/the,
    collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not truth:
        return float(pred == truth)  # both empty: 1, one empty: 0
    common = sum((collections.Counter(pred) & collections.Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], golds: list[list[str]]) -> dict:
    """Exact match and F1 in percent, each the best over a question's gold answers."""
    exact = [
        max(float(normalize_answer(p) == normalize_answer(g)) for g in gs)
        for p, gs in zip(predictions, golds, strict=True)
    ]
    f1 = [max(token_f1(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True)]
    n = max(len(predictions), 1)
    return {
        "exact_match": 100 * sum(exact) / n,
        "f1": 100 * sum(f1) / n,
        "examples": len(predictions),
    }
