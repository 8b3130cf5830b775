"""Character-level tokenizer: one token per Unicode code point seen in training.

Stored as a Hugging Face WordLevel model whose pre-tokenizer isolates every character and
whose decoder fuses tokens back together, so the `tokenizers` library reads it unchanged.
Characters never seen in training map to `<unk>`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.tokenizers.base import Tokenizer

UNK = "<unk>"
_EVERY_CHAR = r"[\s\S]"


class CharTokenizer(Tokenizer):
    algorithm = "char"

    def __init__(self, vocab: list[str], specials: list[str]):
        self.vocab = vocab
        self.specials = specials
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self.unk_id = self.index[UNK]
        # Code point -> id lookup table, so encoding a whole corpus is one numpy gather.
        chars = [(ord(t), i) for i, t in enumerate(vocab) if len(t) == 1 and t not in specials]
        self._table = np.full(max((c for c, _ in chars), default=0) + 1, self.unk_id, np.int64)
        for code, i in chars:
            self._table[code] = i

    @classmethod
    def _train(cls, texts: Iterable[str], vocab_size: int | None, specials: list[str], **options):
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        chars = sorted(seen - set(specials) - {UNK})
        vocab = [*specials, UNK, *chars]
        if vocab_size and len(vocab) > vocab_size:
            raise LmforgeError(
                f"the corpus has {len(chars)} distinct characters, which with "
                f"{len(vocab) - len(chars)} special tokens need vocab_size >= {len(vocab)} "
                f"(got {vocab_size})"
            )
        return cls(vocab, specials)

    @classmethod
    def _recognises(cls, spec: dict) -> bool:
        pre = spec.get("pre_tokenizer") or {}
        return spec.get("model", {}).get("type") == "WordLevel" and pre.get("pattern") == {
            "Regex": _EVERY_CHAR
        }

    @classmethod
    def _from_spec(cls, spec: dict) -> CharTokenizer:
        vocab_map = spec["model"]["vocab"]
        vocab = [""] * len(vocab_map)
        for tok, i in vocab_map.items():
            vocab[i] = tok
        added = spec.get("added_tokens", [])
        specials = [t["content"] for t in added if t.get("special") and t["content"] != UNK]
        return cls(vocab, specials)

    def to_spec(self) -> dict:
        return self._hf_spec(
            [*self.specials, UNK],
            pre_tokenizer={
                "type": "Split",
                "pattern": {"Regex": _EVERY_CHAR},
                "behavior": "Isolated",
                "invert": False,
            },
            decoder={"type": "Fuse"},
            model={"type": "WordLevel", "vocab": self.index, "unk_token": UNK},
        )

    def _encode_ordinary(self, text: str) -> list[int]:
        return self._encode_chars(text).tolist()

    def _encode_ordinary_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        return self._encode_chars(text).tolist(), [(i, i + 1) for i in range(len(text))]

    def encode_array(self, text: str) -> np.ndarray:  # one numpy gather for a whole corpus
        parts = self.split_specials(text)
        if len(parts) == 1 and isinstance(parts[0], str):
            return self._encode_chars(parts[0])
        return np.concatenate(
            [self._encode_chars(p) if isinstance(p, str) else np.array([p]) for p in parts]
            or [np.zeros(0, np.int64)]
        )

    def _encode_chars(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(codes.shape, self.unk_id, np.int64)
        known = codes < len(self._table)
        ids[known] = self._table[codes[known]]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        vocab, n = self.vocab, len(self.vocab)
        return "".join(vocab[i] if 0 <= i < n else "" for i in ids)

    def token_to_id(self, token: str) -> int | None:
        return self.index.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self.vocab[id] if 0 <= id < len(self.vocab) else None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> list[str]:
        return [*self.specials, UNK]

    def token_bytes(self) -> list[int]:
        sizes = super().token_bytes()
        sizes[self.unk_id] = 1  # an unknown character stood for at least one byte
        return sizes
