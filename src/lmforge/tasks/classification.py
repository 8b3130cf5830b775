"""Text classification and sentiment analysis: a text (or a pair of texts) -> one label.

The model is the body with a sequence-classification head: an encoder classifies from its
first token ([CLS], through BERT's pooler when it has one), a decoder from its last real token,
which has seen the whole text. Loss: cross-entropy over the labels. Metrics: accuracy,
macro-F1 (the unweighted mean of the per-class F1, so rare classes count as much as common
ones), per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.tasks import records as r
from lmforge.tasks.base import Task
from lmforge.train.losses import classification_loss


class Classification(Task):
    name = "classification"
    head = "sequence-classification"
    metric = "accuracy"
    roles = {"text": r.text, "text_b": r.text, "label": r.label}
    optional = ("text_b",)

    @classmethod
    def settings_from(cls, records: list[dict], options: dict) -> dict:
        labels = sorted({rec["label"] for rec in records}, key=_label_order)
        if len(labels) < 2:
            raise LmforgeError(
                f"the training data has only the label {labels[0]!r}; classification needs "
                "at least two"
            )
        counts = Counter(rec["label"] for rec in records)
        majority = max(labels, key=lambda label: counts[label])
        return {**options, "labels": labels, "majority_label": majority}

    @property
    def labels(self) -> list[str]:
        return self.settings["labels"]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def check_records(self, records: list[dict]) -> None:
        known = set(self.labels)
        for rec in records:
            if rec["label"] not in known:
                raise LmforgeError(
                    f"{rec['_where']}: label {rec['label']!r} was not seen in training "
                    f"(the model knows {', '.join(self.labels)})"
                )

    def encode(self, text: str, pair: str | None) -> dict:
        enc = self.tokenizer.tokenize(text, pair, max_length=self.max_length)
        return {"input_ids": enc.ids, "token_type_ids": enc.type_ids}

    def examples(self, records: list[dict]) -> list[dict]:
        self.check_records(records)
        index = {label: i for i, label in enumerate(self.labels)}
        return [
            {**self.encode(rec["text"], rec.get("text_b")), "label": index[rec["label"]]}
            for rec in records
        ]

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.inputs(examples)
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([e["label"] for e in examples])
        return batch

    def loss(self, model, batch):
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return classification_loss(
            logits, batch["labels"], self.settings.get("label_smoothing", 0.0)
        )

    @torch.no_grad()
    def probabilities(self, model, inputs: list[tuple[str, str | None]], batch_size: int = 32):
        """(len(inputs), num_labels) class probabilities."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, len(inputs), batch_size):
            rows = [self.encode(text, pair) for text, pair in inputs[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in self.collate(rows).items()}
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            out.append(logits.float().softmax(-1).cpu())
        model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.num_labels)

    def predict(self, model, records, batch_size: int = 32) -> list[dict]:
        probs = self.probabilities(
            model, [(r["text"], r.get("text_b")) for r in records], batch_size
        )
        best = probs.argmax(-1)
        return [
            {"label": self.labels[int(i)], "score": float(p[i])}
            for i, p in zip(best, probs, strict=True)
        ]

    def score(self, predictions: list[dict], records: list[dict]) -> dict:
        self.check_records(records)
        return classification_metrics(
            [rec["label"] for rec in records],
            [p["label"] for p in predictions],
            self.labels,
            self.settings.get("majority_label"),
        )


def _label_order(label: str):
    """Numeric labels in numeric order ('2' before '10'), others alphabetically after."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def classification_metrics(
    truth: list[str], predicted: list[str], labels: list[str], majority: str | None = None
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, and the
    baseline to beat: the accuracy of always answering `majority` (the training data's most
    frequent label; by default the evaluated data's)."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t], index[p]] += 1
    hits = np.diag(confusion).astype(float)
    predicted_n, true_n = confusion.sum(0), confusion.sum(1)
    precision = np.divide(hits, predicted_n, out=np.zeros(k), where=predicted_n > 0)
    recall = np.divide(hits, true_n, out=np.zeros(k), where=true_n > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    present = true_n + predicted_n > 0  # as scikit-learn: classes absent from both are skipped
    n = max(len(truth), 1)
    return {
        "accuracy": float(hits.sum() / n),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "majority_baseline": float(
            true_n.max() / n if majority is None else true_n[index[majority]] / n
        ),
        "examples": len(truth),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(true_n[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": labels,
        "confusion_matrix": confusion.tolist(),
    }
