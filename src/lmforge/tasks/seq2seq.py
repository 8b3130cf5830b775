"""Machine translation and summarization: a text in, a text out, generated token by token.

Two model shapes, chosen by the base model:
- encoder-decoder (BART): the encoder reads the source; the decoder starts from
  `decoder_start_id` and is trained on the target followed by the end token, with
  sequence-to-sequence cross-entropy (optional label smoothing); padding is ignored.
- decoder only (GPT): one sequence `source + separator + target + end`; the loss counts the
  target and end tokens only, so the model learns to answer, not to copy the prompt.
Prediction is greedy or beam search with the inference engine (lmforge.infer.generate),
stopping at the end token.

Metrics: translation, BLEU and chrF from `sacrebleu`; summarization, ROUGE-1/2/L F-measures
from `rouge-score` (with stemming, as papers report them); both also count exact matches.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError
from lmforge.tasks import records as r
from lmforge.tasks.base import Task
from lmforge.train.losses import IGNORE, seq2seq_loss

SEPARATOR = "\n=>\n"  # decoder-only prompt between source and target


class Seq2Seq(Task):
    head = "lm"
    source_role: str
    target_role: str

    @property
    def encoder_decoder(self) -> bool:
        return self.config.arch == "encoder-decoder"

    @property
    def end_id(self) -> int:
        tok = self.tokenizer
        for name in ("</s>", "[SEP]", "<|endoftext|>", "<eos>"):
            if tok.token_to_id(name) is not None:
                return tok.token_to_id(name)
        raise LmforgeError(
            "the tokenizer has no end token (</s>, [SEP] or <|endoftext|>) to end a target with"
        )

    @property
    def start_id(self) -> int:
        return self.settings.get("decoder_start_id", self.end_id)  # BART starts from </s>

    @property
    def max_target_tokens(self) -> int:
        # a decoder shares its context between source and target: half each by default
        return self.settings.get("max_target_tokens") or min(64, self.config.block_size // 2)

    @property
    def separator(self) -> str:
        return self.settings.get("separator", SEPARATOR)

    def source_ids(self, source: str) -> list[int]:
        if self.encoder_decoder:
            return self.tokenizer.tokenize(source, max_length=self.max_length).ids
        ids = self.tokenizer.encode(source + self.separator, add_special_tokens=False)
        room = self.config.block_size - self.max_target_tokens - 1
        if room < 1:
            raise LmforgeError(
                f"max_target_tokens={self.max_target_tokens} leaves no room for the source in "
                f"a context of {self.config.block_size}; lower it"
            )
        return ids[-room:]  # keep the end: it holds the separator that cues the answer

    def target_ids(self, target: str) -> list[int]:
        ids = self.tokenizer.encode(target, add_special_tokens=False)
        return ids[: self.max_target_tokens] + [self.end_id]

    def examples(self, records: list[dict]) -> list[dict]:
        out = []
        for rec in records:
            if self.target_role not in rec:
                raise LmforgeError(f"{rec['_where']}: no field '{self.target_role}'")
            source = self.source_ids(rec[self.source_role])
            target = self.target_ids(rec[self.target_role])
            if self.encoder_decoder:
                out.append(
                    {
                        "input_ids": source,
                        "decoder_input_ids": [self.start_id, *target[:-1]],
                        "labels": target,
                    }
                )
            else:
                sequence = source + target
                labels = [IGNORE] * len(source) + target
                out.append({"input_ids": sequence[:-1], "labels": labels[1:]})
        return out

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = [e["input_ids"] for e in examples]
        batch = {"input_ids": self.pad(ids), "attention_mask": self.mask(ids)}
        if self.encoder_decoder:
            target = [e["decoder_input_ids"] for e in examples]
            batch["decoder_input_ids"] = self.pad(target)
            batch["decoder_attention_mask"] = self.mask(target)
        batch["labels"] = self.pad([e["labels"] for e in examples], IGNORE)
        return batch

    def loss(self, model, batch):
        if self.encoder_decoder:
            logits = model(
                batch["input_ids"],
                batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"],
            )
        else:
            logits = model(batch["input_ids"], batch["attention_mask"])
        smoothing = self.settings.get("label_smoothing", 0.0)
        return seq2seq_loss(logits, batch["labels"], label_smoothing=smoothing)

    @torch.no_grad()
    def generate_texts(self, model, sources: list[str], batch_size: int = 32) -> list[str]:
        from lmforge.infer import Sampling, generate

        beams = self.settings.get("num_beams", 1)
        out = []
        for start in range(0, len(sources), batch_size):
            prompts = [self.source_ids(s) for s in sources[start : start + batch_size]]
            results = generate(
                model,
                prompts,
                self.max_target_tokens,
                Sampling(temperature=0),
                stop_ids=[self.end_id],
                num_beams=beams,
                decoder_start_id=self.start_id if self.encoder_decoder else None,
            )
            out.extend(self.tokenizer.decode(g.ids).strip() for g in results)
        return out

    def predict(self, model, records: list[dict], batch_size: int = 32) -> list[dict]:
        texts = self.generate_texts(model, [rec[self.source_role] for rec in records], batch_size)
        return [{self.output_key: t} for t in texts]

    def check_records(self, records: list[dict]) -> None:
        missing = [rec["_where"] for rec in records if self.target_role not in rec]
        if missing:
            raise LmforgeError(f"{missing[0]}: no field '{self.target_role}' to score against")

    def references(self, records: list[dict]) -> list[str]:
        self.check_records(records)
        return [rec[self.target_role] for rec in records]


class Translation(Seq2Seq):
    name = "translation"
    metric = "bleu"
    source_role, target_role = "source", "target"
    roles = {"source": r.text, "target": r.text}
    optional = ("target",)
    output_key = "translation_text"

    def score(self, predictions: list[dict], records: list[dict]) -> dict:
        import sacrebleu

        hypotheses = [p[self.output_key] for p in predictions]
        references = self.references(records)
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "exact_match": 100 * _exact(hypotheses, references),
            "examples": len(records),
        }


class Summarization(Seq2Seq):
    name = "summarization"
    metric = "rougeL"
    source_role, target_role = "document", "summary"
    roles = {"document": r.text, "summary": r.text}
    optional = ("summary",)
    output_key = "summary_text"

    def score(self, predictions: list[dict], records: list[dict]) -> dict:
        from rouge_score import rouge_scorer

        kinds = ["rouge1", "rouge2", "rougeL"]
        scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
        hypotheses = [p[self.output_key] for p in predictions]
        references = self.references(records)
        sums = dict.fromkeys(kinds, 0.0)
        for hyp, ref in zip(hypotheses, references, strict=True):
            for kind, value in scorer.score(ref, hyp).items():
                sums[kind] += value.fmeasure
        n = max(len(records), 1)
        return {
            **{kind: 100 * total / n for kind, total in sums.items()},
            "exact_match": 100 * _exact(hypotheses, references),
            "examples": len(records),
        }


def _exact(hypotheses: list[str], references: list[str]) -> float:
    same = sum(h.strip() == ref.strip() for h, ref in zip(hypotheses, references, strict=True))
    return same / max(len(references), 1)
