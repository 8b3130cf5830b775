"""Raw text in: the built-in Shakespeare corpus and user corpora (.txt, .jsonl, folders, globs)."""

from lmforge.text.corpus import Document, load_corpus, read_documents, register_corpus
from lmforge.text.shakespeare import VALID_PLAYS, load_shakespeare, markdown_to_text

register_corpus("shakespeare", load_shakespeare)

__all__ = [
    "VALID_PLAYS",
    "Document",
    "load_corpus",
    "load_shakespeare",
    "markdown_to_text",
    "read_documents",
    "register_corpus",
]
