"""Instruction tuning into a chat model: conversations in, a model that answers in turns out.

Records are OpenAI-style conversations, `{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}, ...]}`, each with at least one assistant turn. A conversation is rendered
with the model's chat template by lmforge.infer.chat, the one renderer `lmforge chat` and the
server use, so training sees exactly the text the model is later prompted with. A base
without a template gets `default_template`: ChatML's layout (`<|im_start|>ROLE\\nCONTENT
<|im_end|>\\n`) with the tokenizer's end-of-text token standing for both markers. That adds no
vocabulary (LoRA's frozen embeddings would never train new rows), costs one token per marker
(spelled out, each ChatML marker is 7-8 tokens of a small BPE, 15% of a 128-token context
per turn), and ends every assistant turn with the token `lmforge chat` and the server already
stop at. The template is written into the fine-tuned directory (chat_template.jinja, where
Hugging Face reads it too).

The loss counts assistant tokens only: every assistant turn, its end-of-turn token included;
system and user turns and the role headers are context (`assistant_mask`). Which characters
an assistant turn covers comes from the template itself: the conversation up to the turn
rendered with the generation prompt is a prefix of it rendered through the turn; what lies
between (trailing whitespace trimmed) is what the model must say. A token counts if it
overlaps those characters, as transformers' `return_assistant_tokens_mask` rules.

Training batches are packed: conversations (each cut to the context, keeping its start)
fill rows of up to the context in turn; a block-diagonal causal mask lets each see only
itself and its positions restart at 0, so each scores as it would alone (tested), with
little padding. Scoring pads one conversation per row instead. The validation figure is
the mean loss per assistant token (`assistant_loss`, lower is better), with its perplexity
and next-token accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.fileio import write_text
from lmforge.infer.chat import TEMPLATE_FILE, load_chat_template, render_chat
from lmforge.models.io import read_model_config
from lmforge.tasks.base import Task
from lmforge.train.losses import IGNORE, seq2seq_loss, token_loss

ROLES = ("system", "user", "assistant")
END_OF_TEXT = "<|endoftext|>"


# ChatML's layout; MARK is one special token that opens and closes every turn.
TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{{ 'MARK' + message['role'] + '\\n' + message['content'] + 'MARK' + '\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{ 'MARK' + 'assistant\\n' }}\n"
    "{%- endif -%}"
)


def default_template(marker: str = END_OF_TEXT) -> str:
    """ChatML's layout with `marker` (one special token) as both turn markers."""
    return TEMPLATE.replace("MARK", marker)


def messages(value: object, where: str) -> list[dict[str, str]]:
    """Check one record's conversation: a list of {role, content} with a known role and text,
    at least one assistant turn. A CSV cell may hold it as JSON."""
    out = check_conversation(value, where)
    if not any(m["role"] == "assistant" for m in out):
        raise LmforgeError(
            f"{where} has no assistant turn, so nothing to learn: the loss counts assistant "
            "tokens only"
        )
    return out


def check_conversation(value: object, where: str) -> list[dict[str, str]]:
    """A list of {role, content} messages with known roles and texts, else a clear error."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise LmforgeError(
                f"{where} must be a JSON list of messages, got {value[:40]!r}"
            ) from None
    if not isinstance(value, list) or not value:
        raise LmforgeError(
            f'{where} must be a non-empty list of {{"role", "content"}} messages, '
            f"not {type(value).__name__}"
        )
    out = []
    for n, message in enumerate(value, 1):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise LmforgeError(f"{where}: message {n} must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise LmforgeError(
                f"{where}: message {n} has unknown role {role!r}; roles are {', '.join(ROLES)}"
            )
        if not isinstance(content, str) or not content.strip():
            raise LmforgeError(f"{where}: message {n} ({role}) needs a non-empty text 'content'")
        out.append({"role": role, "content": content})
    return out


def render_with_spans(template: str, conversation: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) characters of each assistant turn."""
    text = render_chat(template, conversation, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = render_chat(template, conversation[:i], add_generation_prompt=True)
        through = render_chat(template, conversation[: i + 1], add_generation_prompt=False)
        if not through.startswith(before) or not text.startswith(through):
            raise LmforgeError(
                "the chat template does not render a conversation turn by turn (the prompt "
                "for a reply is not a prefix of the conversation), so the assistant tokens "
                "cannot be found; use a template that appends each turn"
            )
        end = len(through.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return text, spans


def assistant_mask(
    tokenizer, template: str, conversation: list[dict]
) -> tuple[list[int], list[int]]:
    """(ids, mask) of the rendered conversation; mask is 1 on assistant tokens."""
    text, spans = render_with_spans(template, conversation)
    enc = tokenizer.tokenize(text, add_special_tokens=False)
    mask = [
        int(any(a < e and b > s for s, e in spans)) for a, b in enc.offsets
    ]  # a token overlapping an assistant span belongs to it
    return enc.ids, mask


def _check_arch(arch: str) -> None:
    if arch != "decoder":
        raise LmforgeError(
            f"chat fine-tuning needs a decoder-only model (GPT, Llama-style), not an {arch}"
        )


class Chat(Task):
    name = "chat"
    head = "lm"
    metric = "assistant_loss"
    higher_is_better = False
    roles = {"messages": messages}

    @classmethod
    def adopt_base(cls, base: str | Path, settings: dict) -> dict:
        """The base's chat template, else the default one: fixed in the settings."""
        _check_arch(read_model_config(base).arch)
        template = settings.get("chat_template") or load_chat_template(base)
        if template is None:
            from lmforge.tokenizers import Tokenizer

            if END_OF_TEXT not in Tokenizer.load(base).special_tokens:
                raise LmforgeError(
                    f"{base} has no chat template, and its tokenizer no {END_OF_TEXT} token "
                    f"to end a turn with; put a template in {Path(base) / TEMPLATE_FILE}"
                )
            template = default_template()
        return {**settings, "chat_template": template}

    def write_files(self, directory: Path) -> None:
        write_text(Path(directory) / TEMPLATE_FILE, self.template)

    @property
    def template(self) -> str:
        return self.settings.get("chat_template") or default_template()

    def encode(self, conversation: list[dict]) -> dict:
        """Inputs and next-token labels, IGNORE outside assistant tokens, cut to the context."""
        _check_arch(self.config.arch)
        ids, mask = assistant_mask(self.tokenizer, self.template, conversation)
        ids, mask = ids[: self.max_length + 1], mask[: self.max_length + 1]
        labels = [t if m else IGNORE for t, m in zip(ids[1:], mask[1:], strict=True)]
        return {"input_ids": ids[:-1], "labels": labels}

    def examples(self, records: list[dict]) -> list[dict]:
        out = [self.encode(rec["messages"]) for rec in records]
        kept = [e for e in out if any(t != IGNORE for t in e["labels"])]
        if not kept:
            raise LmforgeError(
                f"no assistant token falls within the first {self.max_length} tokens of any "
                "conversation; shorten the conversations or raise --max-length"
            )
        return kept

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Training batches, packed: conversations fill rows of up to `max_length` tokens in
        turn; each attends to itself only (a block-diagonal causal mask) and its positions
        start from 0, so its loss is what it would be alone, and little is padding."""
        rows: list[list[dict]] = [[]]
        for e in examples:
            if (
                rows[-1]
                and sum(len(x["input_ids"]) for x in rows[-1]) + len(e["input_ids"])
                > self.max_length
            ):
                rows.append([])
            rows[-1].append(e)
        width = max(sum(len(x["input_ids"]) for x in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id(), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segment = torch.full((len(rows), width), -1, dtype=torch.long)  # padding: its own
        for r, row in enumerate(rows):
            start = 0
            for n, e in enumerate(row):
                end = start + len(e["input_ids"])
                ids[r, start:end] = torch.tensor(e["input_ids"])
                labels[r, start:end] = torch.tensor(e["labels"])
                positions[r, start:end] = torch.arange(end - start)
                segment[r, start:end] = n
                start = end
        same = segment[:, :, None] == segment[:, None, :]  # (rows, queries, keys)
        return {"input_ids": ids, "attention_mask": same, "positions": positions, "labels": labels}

    def padded(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """One conversation per row, right-padded (scoring: one loss per conversation)."""
        ids = [e["input_ids"] for e in examples]
        return {
            "input_ids": self.pad(ids),
            "attention_mask": self.mask(ids),
            "labels": self.pad([e["labels"] for e in examples], IGNORE),
        }

    def loss(self, model, batch):
        logits = model(
            batch["input_ids"], batch["attention_mask"], positions=batch.get("positions")
        )
        return seq2seq_loss(logits, batch["labels"], self.settings.get("label_smoothing", 0.0))

    @torch.no_grad()
    def predict(self, model, records: list[dict], batch_size: int = 32) -> list[dict]:
        """Per conversation: the summed loss of its assistant tokens (within the context),
        their number and how many the model ranks first. Teacher-forced, not generated."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, len(records), batch_size):
            rows = [self.encode(rec["messages"]) for rec in records[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in self.padded(rows).items()}
            logits = model(batch["input_ids"], batch["attention_mask"]).float()
            labels = batch["labels"]
            counted = labels != IGNORE
            nll = token_loss(logits, labels, reduction="none")
            hits = (logits.argmax(-1) == labels) & counted
            for row in range(len(rows)):
                out.append(
                    {
                        "nll": float(nll[row].sum()),
                        "tokens": int(counted[row].sum()),
                        "correct": int(hits[row].sum()),
                    }
                )
        model.train(was_training)
        return out

    @torch.no_grad()
    def reply(self, model, conversation: list[dict], max_new_tokens: int = 64) -> str:
        """The assistant's next turn (greedy), as `lmforge chat` would say it; the oldest
        turns are dropped while the prompt leaves less than a quarter of the context."""
        from lmforge.infer import Sampling, generate

        turns = list(conversation)
        room = self.config.block_size - min(max_new_tokens, self.config.block_size // 4)
        while True:
            text = render_chat(self.template, turns, add_generation_prompt=True)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) <= room or len(turns) <= 1:
                break
            turns = turns[1:] if turns[0]["role"] != "system" else [turns[0], *turns[2:]]
        ids = ids[-room:]
        new = min(max_new_tokens, self.config.block_size - len(ids))
        stop = [self.tokenizer.eot_id] if self.tokenizer.eot_id is not None else []
        [out] = generate(model, [ids], new, Sampling(temperature=0), stop_ids=stop)
        return self.tokenizer.decode([i for i in out.ids if i not in stop]).strip()

    def score(self, predictions: list[dict], records: list[dict]) -> dict:
        tokens = sum(p["tokens"] for p in predictions)
        if tokens == 0:
            raise LmforgeError("no assistant token to score within the context")
        loss = sum(p["nll"] for p in predictions) / tokens
        return {
            "assistant_loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": sum(p["correct"] for p in predictions) / tokens,
            "assistant_tokens": tokens,
            "examples": len(records),
        }
