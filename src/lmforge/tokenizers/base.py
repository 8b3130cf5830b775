"""The one Tokenizer interface every algorithm implements, and loading by file format.

The pipeline, as in Hugging Face `tokenizers`: special tokens are cut out first and never
split; each algorithm turns the ordinary text between them into ids with character offsets
(its own normalizer, pre-tokenizer and model); a post-processing template adds the framing
tokens ([CLS] A [SEP] B [SEP]); truncation (with stride and overflowing windows) and padding
come last. Tokenizers are saved as a Hugging Face `tokenizer.json`, so
`tokenizers.Tokenizer.from_file` reads what we write and gives the same ids.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from lmforge.errors import LmforgeError


def without_cyclic_gc(method):
    """Run `method` with Python's cyclic garbage collector paused. Encoding a batch allocates
    many small lists and tuples that never form cycles, and each allocation burst triggers
    collections that walk every live object: in a process holding many (after training a
    tokenizer, say) that was a third of `encode_batch`'s time. Reference counting still
    frees everything as usual."""

    assert not inspect.isgeneratorfunction(method), "the collector would be back before it runs"

    @functools.wraps(method)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return method(*args, **kwargs)
        gc.disable()
        try:
            return method(*args, **kwargs)
        finally:
            gc.enable()

    return paused


TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"  # separates documents in the token stream

Offset = tuple[int, int]  # [start, end) character offsets into the text that was encoded


@dataclass
class Encoding:
    """What `Tokenizer.tokenize` returns: one row of model input, with its alignment."""

    ids: list[int]
    tokens: list[str]
    offsets: list[Offset]  # (0, 0) for tokens the template or padding added
    type_ids: list[int]  # 0 for the first sequence, 1 for the second (BERT's segments)
    attention_mask: list[int]  # 0 on padding
    special_tokens_mask: list[int]  # 1 on tokens the template or padding added
    sequence_ids: list[int | None] = field(default_factory=list)  # 0, 1, or None if added
    overflowing: list[Encoding] = field(default_factory=list)  # further truncation windows

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Template:
    """Post-processing as Hugging Face's TemplateProcessing: items are special tokens or the
    sequences $A / $B, each with a type id after a colon, e.g. BERT's
    single = ["[CLS]", "$A", "[SEP]"], pair = ["[CLS]", "$A", "[SEP]", "$B:1", "[SEP]:1"]."""

    single: list[str]
    pair: list[str]

    @staticmethod
    def parse(item: str) -> tuple[str, int]:
        """'[SEP]:1' -> ('[SEP]', 1); '$A' -> ('$A', 0)."""
        name, colon, type_id = item.rpartition(":")
        return (name, int(type_id)) if colon and type_id.isdigit() else (item, 0)

    def added(self, pair: bool) -> int:
        return sum(
            not self.parse(i)[0].startswith("$") for i in (self.pair if pair else self.single)
        )

    def to_spec(self, token_to_id) -> dict:
        def items(template):
            out = []
            for item in template:
                name, type_id = self.parse(item)
                if name.startswith("$"):
                    out.append({"Sequence": {"id": name[1:], "type_id": type_id}})
                else:
                    out.append({"SpecialToken": {"id": name, "type_id": type_id}})
            return out

        names = {self.parse(i)[0] for i in self.single + self.pair} - {"$A", "$B"}
        return {
            "type": "TemplateProcessing",
            "single": items(self.single),
            "pair": items(self.pair),
            "special_tokens": {
                n: {"id": n, "ids": [token_to_id(n)], "tokens": [n]} for n in sorted(names)
            },
        }

    @staticmethod
    def from_spec(spec: dict | None) -> Template | None:
        """Read TemplateProcessing or BertProcessing; None for no post-processor."""
        if not spec:
            return None
        if spec["type"] == "BertProcessing":
            cls_, sep = spec["cls"][0], spec["sep"][0]
            return Template([cls_, "$A", sep], [cls_, "$A", sep, "$B:1", f"{sep}:1"])
        if spec["type"] == "TemplateProcessing":

            def items(template):
                out = []
                for item in template:
                    ((kind, body),) = item.items()
                    name = f"${body['id']}" if kind == "Sequence" else body["id"]
                    out.append(f"{name}:{body['type_id']}")
                return out

            return Template(items(spec["single"]), items(spec["pair"]))
        if spec["type"] == "ByteLevel":  # offsets trimming only; no tokens added
            return None
        raise LmforgeError(f"post-processor {spec['type']} is not supported by lmforge")


class Tokenizer(ABC):
    algorithm: ClassVar[str]
    default_specials: ClassVar[tuple[str, ...]] = (EOT,)
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer.registry[cls.algorithm] = cls

    # -- training and loading (dispatch on the algorithm name / file contents)

    @staticmethod
    def train(
        texts: Iterable[str],
        algorithm: str = "char",
        vocab_size: int | None = None,
        special_tokens: Iterable[str] | None = None,
        **options,
    ) -> Tokenizer:
        """Learn a vocabulary from `texts`; `options` go to the algorithm (e.g. BPE's
        `pattern='cl100k'`). Special tokens default to the algorithm's own (GPT's
        <|endoftext|>, BERT's [PAD] [UNK] [CLS] [SEP] [MASK], ...)."""
        if algorithm in Tokenizer.registry and special_tokens is None:
            special_tokens = Tokenizer.registry[algorithm].default_specials
        special_tokens = list(special_tokens or [])
        if any(not s for s in special_tokens) or len(set(special_tokens)) < len(special_tokens):
            raise LmforgeError(
                f"special tokens must be distinct non-empty strings: {special_tokens}"
            )
        if algorithm not in Tokenizer.registry:
            raise LmforgeError(
                f"unknown tokenizer algorithm '{algorithm}'; "
                f"choose from {sorted(Tokenizer.registry)}"
            )
        return Tokenizer.registry[algorithm]._train(texts, vocab_size, special_tokens, **options)

    @staticmethod
    def load(directory: str | Path) -> Tokenizer:
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise LmforgeError(
                f"no {TOKENIZER_FILE} in {directory}; train or copy a tokenizer there"
            )
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LmforgeError(f"{path} is corrupt ({e.__class__.__name__}); retrain it") from None
        if not isinstance(spec, dict) or "model" not in spec:
            raise LmforgeError(f"{path} is not a Hugging Face tokenizer.json")
        if str(spec.get("version", "1.0")) != "1.0":
            raise LmforgeError(
                f"{path} has format version {spec['version']}; this lmforge reads version 1.0 "
                "(upgrade lmforge, or re-save the tokenizer in the 1.0 format)"
            )
        for cls in Tokenizer.registry.values():
            if cls._recognises(spec):
                return cls._from_spec(spec)
        raise LmforgeError(f"{path}: tokenizer model not supported by this lmforge version")

    # -- what each algorithm provides

    @classmethod
    @abstractmethod
    def _train(
        cls, texts: Iterable[str], vocab_size: int | None, specials: list[str], **options
    ): ...

    @classmethod
    @abstractmethod
    def _recognises(cls, spec: dict) -> bool: ...

    @classmethod
    @abstractmethod
    def _from_spec(cls, spec: dict) -> Tokenizer: ...

    @abstractmethod
    def to_spec(self) -> dict:
        """The Hugging Face tokenizer.json contents."""

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]:
        """Ids of text holding no special tokens."""

    @abstractmethod
    def _encode_ordinary_offsets(self, text: str) -> tuple[list[int], list[Offset]]:
        """Ids and [start, end) character offsets into `text`, for text without specials."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abstractmethod
    def id_to_token(self, id: int) -> str | None: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def special_tokens(self) -> list[str]: ...

    # -- shared behaviour

    template: Template | None = None  # post-processing, e.g. BERT's [CLS] $A [SEP]
    pad_token: str | None = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; the template's framing tokens are added unless told not to."""
        ids = self._encode_ids(text)
        if add_special_tokens and self.template:
            ids = self._assemble([(ids, [(0, 0)] * len(ids), [0] * len(ids))], framed=True).ids
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as a numpy array, without template tokens: a stretch of a token stream."""
        return np.asarray(self._encode_ids(text), dtype=np.int64)

    def _encode_ids(self, text: str) -> list[int]:
        pattern = self._specials_pattern
        if pattern is None or not pattern.search(text):  # the common case: no specials
            return self._encode_ordinary(text)
        ids: list[int] = []
        for piece in self.split_specials(text):
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids.extend(self._encode_ordinary(piece))
        return ids

    def _encode_offsets(self, text: str) -> tuple[list[int], list[Offset], list[int]]:
        """Ids, offsets into `text` and the special-token mask, specials included."""
        ids: list[int] = []
        offsets: list[Offset] = []
        special: list[int] = []
        start = 0
        for piece in self.split_specials(text):
            if isinstance(piece, int):
                end = start + len(self.id_to_token(piece) or "")
                ids.append(piece)
                offsets.append((start, end))
                special.append(0)  # as in Hugging Face: only tokens the template adds count
                start = end
                continue
            piece_ids, piece_offsets = self._encode_ordinary_offsets(piece)
            ids.extend(piece_ids)
            offsets.extend((start + a, start + b) for a, b in piece_offsets)
            special.extend([0] * len(piece_ids))
            start += len(piece)
        return ids, offsets, special

    def tokenize(
        self,
        text: str,
        pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        stride: int = 0,
        truncation: str = "longest_first",
    ) -> Encoding:
        """Full encoding of a text (or a pair): ids, tokens, offsets, type ids, masks.

        With `max_length`, sequences are cut to fit (template tokens included). For
        truncation 'only_first'/'only_second' the cut sequence continues in `overflowing`
        windows that overlap by `stride` tokens, as question answering over long contexts
        needs; 'longest_first' trims the longer sequence one token at a time.
        """
        if truncation not in {"longest_first", "only_first", "only_second"}:
            raise LmforgeError(
                f"unknown truncation '{truncation}'; use longest_first, only_first or only_second"
            )
        seqs = [self._encode_offsets(text)] + (
            [self._encode_offsets(pair)] if pair is not None else []
        )
        framed = add_special_tokens and self.template is not None
        room = None
        if max_length is not None:
            added = self.template.added(pair is not None) if framed else 0
            room = max_length - added
            if room < len(seqs):
                raise LmforgeError(f"max_length={max_length} leaves no room for the text")
        windows = self._truncate(seqs, room, stride, truncation)
        encodings = [self._assemble(w, framed) for w in windows]
        first = encodings[0]
        first.overflowing = encodings[1:]
        return first

    def tokenize_batch(
        self,
        texts: Sequence[str | tuple[str, str]],
        *,
        padding: str | None = "longest",
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        **kwargs,
    ) -> list[Encoding]:
        """`tokenize` each text (or (text, pair)) and pad them to one length ('longest', or
        'max_length' with max_length given)."""
        encodings = [
            self.tokenize(t, **kwargs)
            if isinstance(t, str)
            else self.tokenize(t[0], t[1], **kwargs)
            for t in texts
        ]
        if padding is None:
            return encodings
        if padding == "max_length":
            if kwargs.get("max_length") is None:
                raise LmforgeError("padding='max_length' needs max_length")
            length = kwargs["max_length"]
        elif padding == "longest":
            length = max((len(e) for e in encodings), default=0)
        else:
            raise LmforgeError(f"unknown padding '{padding}'; use 'longest' or 'max_length'")
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        return [self.pad(e, length, padding_side) for e in encodings]

    def pad(self, encoding: Encoding, length: int, side: str = "right") -> Encoding:
        if side not in {"left", "right"}:
            raise LmforgeError(f"padding side must be 'left' or 'right', not '{side}'")
        n = length - len(encoding)
        if n <= 0:
            return encoding
        pad_token = self.pad_token or (EOT if self.token_to_id(EOT) is not None else None)
        if pad_token is None or self.token_to_id(pad_token) is None:
            raise LmforgeError("this tokenizer has no padding token; set tokenizer.pad_token")
        fill = {
            "ids": [self.token_to_id(pad_token)] * n,
            "tokens": [pad_token] * n,
            "offsets": [(0, 0)] * n,
            "type_ids": [0] * n,
            "attention_mask": [0] * n,
            "special_tokens_mask": [1] * n,
            "sequence_ids": [None] * n,
        }
        padded = {
            k: (
                fill[k] + getattr(encoding, k) if side == "left" else getattr(encoding, k) + fill[k]
            )
            for k in fill
        }
        overflow = [self.pad(o, length, side) for o in encoding.overflowing]
        return Encoding(**padded, overflowing=overflow)

    @staticmethod
    def _truncate(seqs, room, stride, truncation):
        """Windows (lists of (ids, offsets, special) per sequence) that fit in `room`."""
        total = sum(len(s[0]) for s in seqs)
        if room is None or total <= room:
            return [seqs]

        def cut(seq, a, b):
            return tuple(part[a:b] for part in seq)

        if truncation == "longest_first":
            lengths = [len(s[0]) for s in seqs]
            while sum(lengths) > room:
                longest = max(range(len(lengths)), key=lambda i: (lengths[i], -i))
                lengths[longest] -= 1
            return [[cut(s, 0, n) for s, n in zip(seqs, lengths, strict=True)]]
        which = 0 if truncation == "only_first" else 1
        if which >= len(seqs):
            raise LmforgeError(f"truncation='{truncation}' needs a pair of texts")
        other = sum(len(s[0]) for i, s in enumerate(seqs) if i != which)
        size = room - other
        if size < 1:
            raise LmforgeError(
                f"max_length leaves no room for the {'first' if which == 0 else 'second'} text"
            )
        if stride >= size:
            raise LmforgeError(f"stride={stride} must be smaller than the window ({size} tokens)")
        n = len(seqs[which][0])
        windows, start = [], 0
        while True:
            window = list(seqs)
            window[which] = cut(seqs[which], start, start + size)
            windows.append(window)
            if start + size >= n:
                return windows
            start += size - stride

    def _assemble(self, seqs, framed: bool) -> Encoding:
        parts = []  # (ids, offsets, special, type_id, sequence_id)
        if framed:
            template = self.template.pair if len(seqs) == 2 else self.template.single
            for item in template:
                name, type_id = Template.parse(item)
                if name in {"$A", "$B"}:
                    index = 0 if name == "$A" else 1
                    ids, offsets, special = seqs[index]
                    parts.append((ids, offsets, special, type_id, index))
                else:
                    parts.append(([self.token_to_id(name)], [(0, 0)], [1], type_id, None))
        else:
            for index, (ids, offsets, special) in enumerate(seqs):
                parts.append((ids, offsets, special, index, index))
        enc = Encoding([], [], [], [], [], [], [])
        for ids, offsets, special, type_id, seq_id in parts:
            enc.ids.extend(ids)
            enc.tokens.extend(self.id_to_token(i) for i in ids)
            enc.offsets.extend(offsets)
            enc.type_ids.extend([type_id] * len(ids))
            enc.attention_mask.extend([1] * len(ids))
            enc.special_tokens_mask.extend(special)
            enc.sequence_ids.extend([seq_id] * len(ids))
        return enc

    def split_specials(self, text: str) -> list[str | int]:
        """Cut `text` at special tokens, which are matched as written and never split, as
        Hugging Face does for added tokens: ['a', 0, 'b'] for 'a<|endoftext|>b'."""
        pattern = self._specials_pattern
        if pattern is None or not pattern.search(text):
            return [text]
        pieces = pattern.split(text)
        return [self.token_to_id(p) if i % 2 else p for i, p in enumerate(pieces) if p]

    @functools.cached_property
    def _specials_pattern(self) -> re.Pattern | None:
        specials = sorted(self.special_tokens, key=len, reverse=True)  # longest match first
        return re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    @without_cyclic_gc
    def encode_batch(
        self, texts: Iterable[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def token_bytes(self) -> list[int]:
        """UTF-8 length of each token's text, 0 for special tokens: the denominator of
        bits per byte."""
        specials = set(self.special_tokens)
        return [
            0 if tok in specials else len(tok.encode("utf-8"))
            for tok in map(self.id_to_token, range(self.vocab_size))
        ]

    def _hf_spec(self, specials: list[str], **parts) -> dict:
        """A tokenizer.json: `specials` become special added tokens (matched before anything
        else, never split); `parts` are the normalizer, pre_tokenizer, post_processor,
        decoder and model sections."""
        added = [
            {
                "id": self.token_to_id(s),
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s in specials
        ]
        sections = {"normalizer": None, "pre_tokenizer": None, "post_processor": None}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            **sections,
            **parts,
        }

    @property
    def eot_id(self) -> int | None:
        return self.token_to_id(EOT)

    @property
    def separator_id(self) -> int | None:
        """The token before each document of a pretraining stream: EOT, else BERT's [SEP],
        so a window that spans two documents shows where one ends."""
        eot = self.eot_id
        return eot if eot is not None else self.token_to_id("[SEP]")

    def save(self, directory: str | Path) -> Path:
        from lmforge.fileio import write_json

        path = Path(directory) / TOKENIZER_FILE
        write_json(path, self.to_spec())
        return path


class TableVocab:
    """Vocabulary look-ups for a tokenizer that keeps `vocab` (token -> id), `inverse`
    (id -> token) and `specials` (BPE and WordPiece)."""

    vocab: dict[str, int]
    inverse: dict[int, str]
    specials: list[str]

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self.inverse.get(id)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> list[str]:
        return list(self.specials)
