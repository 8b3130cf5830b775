"""The fuzz targets: each reader of files that come from outside, given raw bytes as a file.

A target returns what the reader made, or None when the reader refused the input with an
LmforgeError (the clean refusal); any other exception escapes, and is a bug. Used by the
bounded hypothesis tests (tests/test_fuzz.py) and by `scripts/fuzz.py` (atheris).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import tempfile
from pathlib import Path

from lmforge.errors import LmforgeError


def _in(folder: Path | None):
    if folder is not None:
        return contextlib.nullcontext(Path(folder))
    return tempfile.TemporaryDirectory()


def _target(filename: str):
    """Wrap `read(path)`: write the bytes to `filename` in a folder, read, refuse cleanly."""

    def wrap(read):
        @functools.wraps(read)
        def run(data: bytes, folder: Path | None = None, strict: bool = False):
            with _in(folder) as where:
                path = Path(where) / filename
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                try:
                    return read(path)
                except LmforgeError:
                    if strict:
                        raise
                    return None

        return run

    return wrap


@_target("tokenizer.json")
def tokenizer_json(path: Path):
    from lmforge.tokenizers import Tokenizer

    tok = Tokenizer.load(path.parent)
    return tok.encode("Hello, world"), tok


@_target("vocab.txt")
def vocab_txt(path: Path):
    from lmforge.infer.loading import load_tokenizer

    tok = load_tokenizer(path.parent)
    return tok.encode("hello world"), tok


def _vectors(fmt: str):
    def read(path: Path):
        from lmforge.embeddings import KeyedVectors

        vectors = KeyedVectors.load(path, fmt)
        if len(vectors) > 1:
            vectors.most_similar(vectors.words[0], topn=1)
        return vectors

    return read


word2vec_text = _target("v.txt")(_vectors("word2vec-text"))
word2vec_binary = _target("v.bin")(_vectors("word2vec-binary"))
glove_text = _target("v.glove.txt")(_vectors("glove"))
vectors_detected = _target("v.vec")(_vectors(None))


@_target("m/model.safetensors")
def safetensors_weights(path: Path):
    from lmforge.models import from_pretrained

    (path.parent / "config.json").write_text(json.dumps({"model": TINY_MODEL}))
    return from_pretrained(path.parent)


@_target("t.jsonl")
def jsonl_records(path: Path):
    from lmforge.tasks import get_task

    return get_task("classification").read(path, None)


@_target("t.csv")
def csv_records(path: Path):
    from lmforge.tasks import get_task

    return get_task("qa").read(path, None)


@_target("c.yaml")
def yaml_config(path: Path):
    from lmforge.config import load_config

    return load_config(str(path))


TARGETS = {
    "tokenizer_json": tokenizer_json,
    "vocab_txt": vocab_txt,
    "word2vec_text": word2vec_text,
    "word2vec_binary": word2vec_binary,
    "glove_text": glove_text,
    "vectors_detected": vectors_detected,
    "safetensors_weights": safetensors_weights,
    "jsonl_records": jsonl_records,
    "csv_records": csv_records,
    "yaml_config": yaml_config,
}

TINY_MODEL = {"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 4}


@functools.cache
def seed_files() -> dict[str, bytes]:
    """A valid file for each target, which the mutation fuzzing starts from."""
    import numpy as np
    import torch

    from lmforge.config import ModelConfig
    from lmforge.embeddings import KeyedVectors
    from lmforge.models import Transformer, save_weights
    from lmforge.tokenizers import Tokenizer

    seeds = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        tok = Tokenizer.train(["hello world, hello there"] * 5, "bpe", 270)
        tok.save(folder)
        seeds["tokenizer_json"] = (folder / "tokenizer.json").read_bytes()
        seeds["vocab_txt"] = "\n".join(
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "h"]
        ).encode()
        rng = np.random.default_rng(0)
        vectors = KeyedVectors(["king", "queen", "man"], rng.standard_normal((3, 4)).astype("f4"))
        for name, fmt in (
            ("word2vec_text", "word2vec-text"),
            ("word2vec_binary", "word2vec-binary"),
            ("glove_text", "glove"),
        ):
            seeds[name] = vectors.save(folder / name, fmt).read_bytes()
        seeds["vectors_detected"] = seeds["word2vec_text"]
        torch.manual_seed(0)
        (folder / "m").mkdir()
        save_weights(Transformer(ModelConfig(**TINY_MODEL)), folder / "m")
        seeds["safetensors_weights"] = (folder / "m" / "model.safetensors").read_bytes()
    buffer = io.StringIO()
    for text, label in [("a fine day", "pos"), ("a vile day", "neg")] * 2:
        buffer.write(json.dumps({"text": text, "label": label}) + "\n")
    seeds["jsonl_records"] = buffer.getvalue().encode()
    seeds["csv_records"] = (
        b'question,context,answer\n"Who came?","Romeo came late.",Romeo\n'
        b'"When?","He came late.",late\n'
    )
    seeds["yaml_config"] = b"model:\n  n_layer: 2\ntrain:\n  max_steps: 10\n"
    return seeds
