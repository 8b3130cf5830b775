"""Tokenizers: one interface (`Tokenizer`), one file per algorithm, HF tokenizer.json on disk."""

from lmforge.tokenizers.base import EOT, TOKENIZER_FILE, Encoding, Template, Tokenizer
from lmforge.tokenizers.bpe import BPETokenizer
from lmforge.tokenizers.char import CharTokenizer
from lmforge.tokenizers.unigram import UnigramTokenizer
from lmforge.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "EOT",
    "TOKENIZER_FILE",
    "BPETokenizer",
    "CharTokenizer",
    "Encoding",
    "Template",
    "Tokenizer",
    "UnigramTokenizer",
    "WordPieceTokenizer",
]
