"""Start a Transformer's token embedding from trained word vectors.

Which vector each token gets (`token_vectors`):

1. A token that is a whole word of the vectors (as written, else lowercased) takes that
   word's vector. Word-level vocabularies are covered by this rule alone.
2. A subword takes a vector built from the words it can be part of. Whether it starts a word
   or continues one comes from its marker: WordPiece's `##` prefix marks a continuation;
   byte-level BPE's `Ġ` and SentencePiece's `▁` mark a word start and are stripped; an
   unmarked token counts as a word start (true of WordPiece, and of BPE at line starts).
   - FastText vectors: the mean of the piece's character n-gram vectors, from `<piece` for
     a word start and from `piece` for a continuation (`FastTextVectors.piece_vector`).
   - Other vectors: the mean of the vectors of the (at most 100 most frequent) words that
     begin with the piece (word start), or hold it after their first letter (continuation),
     among the 50,000 most frequent words.
     A continuation such as `##s` is never given the vector of the word "s".
3. Special tokens, and pieces no rule covers, keep the embedding's own initial values.

The copied vectors are scaled by one common factor so that their standard deviation equals
that of the embedding's current rows (`rescale=True`): word vectors are typically 100 times
larger than a Transformer's initial embedding (std 0.02), and rows of such different sizes
would train unevenly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from lmforge.embeddings.fasttext import FastTextVectors
from lmforge.embeddings.vectors import KeyedVectors
from lmforge.errors import LmforgeError

CONTINUATION = "##"
WORD_START = ("Ġ", "▁")
WORDS_PER_PIECE = 100
MAX_PIECE_LENGTH = 24
INDEXED_WORDS = 50_000  # the most frequent words searched for pieces


def _tokens(tokenizer) -> tuple[list[str | None], set[str]]:
    """Token strings by id, and the special tokens, from an lmforge Tokenizer, a list of
    tokens (index = id) or a token -> id mapping."""
    if isinstance(tokenizer, Mapping):
        tokens: list[str | None] = [None] * (max(tokenizer.values(), default=-1) + 1)
        for token, i in tokenizer.items():
            tokens[i] = token
        return tokens, set()
    if isinstance(tokenizer, Sequence) and not isinstance(tokenizer, str):
        return list(tokenizer), set()
    if hasattr(tokenizer, "id_to_token") and hasattr(tokenizer, "vocab_size"):
        tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        return tokens, set(getattr(tokenizer, "special_tokens", ()))
    raise LmforgeError(
        f"cannot read tokens from a {type(tokenizer).__name__}; give an lmforge Tokenizer, "
        "a list of tokens, or a token -> id mapping"
    )


def split_marker(token: str) -> tuple[str, bool]:
    """(the piece's text, whether it starts a word)."""
    if token.startswith(CONTINUATION) and len(token) > len(CONTINUATION):
        return token[len(CONTINUATION) :], False
    if token.startswith(WORD_START):
        return token[1:], True
    return token, True


class _WordIndex:
    """Word rows by prefix and by inner substring, for the mean-of-words rule."""

    def __init__(self, vectors: KeyedVectors):
        self.vectors = vectors
        self.starts: dict[str, list[int]] = {}
        self.inner: dict[str, list[int]] = {}

    def _build(self) -> None:
        for row, word in enumerate(self.vectors.words[:INDEXED_WORDS]):  # most frequent first
            for end in range(1, min(len(word), MAX_PIECE_LENGTH) + 1):
                rows = self.starts.setdefault(word[:end], [])
                if len(rows) < WORDS_PER_PIECE:
                    rows.append(row)
            seen = set()
            for start in range(1, len(word)):
                for end in range(start + 1, min(len(word), start + MAX_PIECE_LENGTH) + 1):
                    piece = word[start:end]
                    rows = self.inner.setdefault(piece, [])
                    if piece not in seen and len(rows) < WORDS_PER_PIECE:
                        rows.append(row)
                        seen.add(piece)

    def vector(self, piece: str, initial: bool) -> np.ndarray | None:
        if not self.starts:
            self._build()
        rows = (self.starts if initial else self.inner).get(piece)
        return self.vectors.vectors[rows].mean(0) if rows else None


def token_vectors(tokenizer, vectors: KeyedVectors) -> dict[int, tuple[str, np.ndarray]]:
    """id -> (rule, vector) for every token a rule covers; rule is "word" or "subword"."""
    tokens, specials = _tokens(tokenizer)
    words = _WordIndex(vectors)
    found: dict[int, tuple[str, np.ndarray]] = {}
    for i, token in enumerate(tokens):
        if not token or token in specials:
            continue
        piece, initial = split_marker(token)
        if not piece:
            continue
        word = next((w for w in (piece, piece.lower()) if w in vectors.index), None)
        if initial and word is not None:
            found[i] = ("word", vectors.vectors[vectors.index[word]])
            continue
        if isinstance(vectors, FastTextVectors):
            v = vectors.piece_vector(piece.lower(), initial)
        else:
            v = words.vector(piece.lower(), initial)
        if v is not None:
            found[i] = ("subword", v)
    return found


def init_token_embedding(
    embedding: torch.nn.Embedding, tokenizer, vectors: KeyedVectors, rescale: bool = True
) -> int:
    """Copy word vectors into the rows of `embedding` whose tokens the rules above cover;
    return how many rows were set. `tokenizer`: an lmforge Tokenizer, a list of tokens
    (index = id, e.g. a word-level vocabulary) or a token -> id mapping."""
    if embedding.embedding_dim != vectors.dim:
        raise LmforgeError(
            f"the vectors have {vectors.dim} dimensions but the embedding has "
            f"{embedding.embedding_dim}; train vectors with --dim {embedding.embedding_dim}, "
            f"or build the model with an embedding width of {vectors.dim}"
        )
    found = token_vectors(tokenizer, vectors)
    if found and max(found) >= embedding.num_embeddings:
        raise LmforgeError(
            f"the tokenizer has token id {max(found)} but the embedding only "
            f"{embedding.num_embeddings} rows; build the embedding for this tokenizer"
        )
    if not found:
        return 0
    ids = torch.tensor(sorted(found))
    rows = torch.from_numpy(np.stack([found[i][1] for i in sorted(found)])).float()
    with torch.no_grad():
        weight = embedding.weight
        if rescale:
            rows *= weight.detach().float().std() / rows.std().clamp(min=1e-12)
        weight[ids] = rows.to(weight.dtype)
    return len(ids)
