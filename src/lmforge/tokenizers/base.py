"""The one Tokenizer interface every algorithm implements, and loading by file format.

Tokenizers are saved as a Hugging Face `tokenizer.json`, so `tokenizers.Tokenizer.from_file`
reads what we write and gives the same ids.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np

from lmforge.errors import LmforgeError

TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"  # separates documents in the token stream


class Tokenizer(ABC):
    algorithm: ClassVar[str]
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
        special_tokens: Iterable[str] = (EOT,),
    ) -> Tokenizer:
        if algorithm not in Tokenizer.registry:
            raise LmforgeError(
                f"unknown tokenizer algorithm '{algorithm}'; "
                f"choose from {sorted(Tokenizer.registry)}"
            )
        return Tokenizer.registry[algorithm]._train(texts, vocab_size, list(special_tokens))

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
        for cls in Tokenizer.registry.values():
            if cls._recognises(spec):
                return cls._from_spec(spec)
        raise LmforgeError(f"{path}: tokenizer model not supported by this lmforge version")

    # -- what each algorithm provides

    @classmethod
    @abstractmethod
    def _train(cls, texts: Iterable[str], vocab_size: int | None, specials: list[str]): ...

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
    def encode(self, text: str) -> list[int]: ...

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

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def split_specials(self, text: str) -> list[str | int]:
        """Cut `text` at special tokens, which are matched as written and never split, as
        Hugging Face does for added tokens: ['a', 0, 'b'] for 'a<|endoftext|>b'."""
        specials = sorted(self.special_tokens, key=len, reverse=True)
        if not any(s in text for s in specials):
            return [text]
        pattern = "(" + "|".join(re.escape(s) for s in specials) + ")"
        pieces = re.split(pattern, text)
        return [self.token_to_id(p) if i % 2 else p for i, p in enumerate(pieces) if p]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def token_bytes(self) -> list[int]:
        """UTF-8 length of each token's text, 0 for special tokens: the denominator of
        bits per byte."""
        specials = set(self.special_tokens)
        return [
            0 if tok in specials else len(tok.encode("utf-8"))
            for tok in map(self.id_to_token, range(self.vocab_size))
        ]

    @property
    def eot_id(self) -> int | None:
        return self.token_to_id(EOT)

    def save(self, directory: str | Path) -> Path:
        from lmforge.fileio import write_json

        path = Path(directory) / TOKENIZER_FILE
        write_json(path, self.to_spec())
        return path
