"""An embeddings directory, as `lmforge embeddings train` writes it:

- the vectors file: `vectors.bin` (word2vec binary, the default), `vectors.txt` (word2vec
  text) or `vectors.glove.txt` (GloVe text), readable by gensim and other tools;
- `ngrams.safetensors` (FastText only): the n-gram table, so unseen words get vectors;
- `embeddings.json`: algorithm, settings, vocabulary size, timing, and which files hold what.

The directory is assembled beside its final place and renamed into it when complete, so an
interrupted run leaves no half-written directory; an existing one is replaced only if it
is an embeddings directory (it holds `embeddings.json`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from lmforge.embeddings.fasttext import FastTextVectors
from lmforge.embeddings.vectors import KeyedVectors
from lmforge.embeddings.word2vec import Trained
from lmforge.errors import LmforgeError
from lmforge.fileio import write_json

META_FILE = "embeddings.json"
VECTOR_FILES = {
    "word2vec-binary": "vectors.bin",
    "word2vec-text": "vectors.txt",
    "glove": "vectors.glove.txt",
}


def save_embeddings(
    trained: Trained, directory: str | os.PathLike, algorithm: str, fmt: str = "word2vec-binary"
) -> Path:
    """Write `trained` as an embeddings directory; return its path."""
    if fmt not in VECTOR_FILES:
        raise LmforgeError(f"unknown vectors format '{fmt}'; use one of {', '.join(VECTOR_FILES)}")
    target = Path(directory)
    ours_or_empty = (target / META_FILE).is_file() or (
        target.is_dir() and not any(target.iterdir())
    )
    if target.exists() and not ours_or_empty:
        raise LmforgeError(
            f"{target} exists and is not an embeddings directory; give another --output "
            "or remove it"
        )
    staging = target.parent / f".{target.name}.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        vectors = trained.vectors
        vectors.save(staging / VECTOR_FILES[fmt], fmt)
        files = {"vectors": VECTOR_FILES[fmt]}
        if isinstance(vectors, FastTextVectors):
            files["ngrams"] = vectors.save_ngrams(staging).name
        stats = trained.stats
        write_json(
            staging / META_FILE,
            {
                "algorithm": algorithm,
                "format": fmt,
                "files": files,
                "words": len(vectors),
                "dim": vectors.dim,
                "settings": asdict(trained.settings),
                "corpus_words": stats.raw_words,
                "train_seconds": round(stats.seconds, 3),
                "words_per_s": round(stats.words_per_s),
            },
        )
        if target.exists():
            old = target.parent / f".{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_embeddings(path: str | os.PathLike) -> KeyedVectors:
    """Vectors from an embeddings directory (FastText ones answer for unseen words too), or
    from a single word2vec/GloVe file such as gensim writes."""
    path = Path(path)
    if path.is_file():
        return KeyedVectors.load(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise LmforgeError(
            f"{path} holds no {META_FILE}; give a directory written by "
            "'lmforge embeddings train' or a word2vec/GloVe vectors file"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files, fmt = meta["files"], meta["format"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise LmforgeError(f"{meta_path} is corrupt; train the embeddings again") from None
    vectors = KeyedVectors.load(path / files["vectors"], fmt)
    if "ngrams" in files:
        vectors = FastTextVectors.load_ngrams(vectors, path)
    return vectors
