"""Tokenizers: one interface (`Tokenizer`), one file per algorithm, HF tokenizer.json on disk."""

from lmforge.tokenizers.base import EOT, TOKENIZER_FILE, Tokenizer
from lmforge.tokenizers.char import CharTokenizer

__all__ = ["EOT", "TOKENIZER_FILE", "CharTokenizer", "Tokenizer"]
