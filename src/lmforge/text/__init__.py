"""Raw text in: the built-in Shakespeare corpus and user corpora (.txt, .jsonl, folders, globs)."""

from lmforge.text.corpus import Document, load_corpus, read_documents
from lmforge.text.shakespeare import VALID_PLAYS, load_shakespeare, markdown_to_text

__all__ = [
    "VALID_PLAYS",
    "Document",
    "load_corpus",
    "load_shakespeare",
    "markdown_to_text",
    "read_documents",
]
