"""Tiny base model directories (encoder, decoder, encoder-decoder) and task data files."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmforge.config import load_model_preset
from lmforge.models import Transformer
from lmforge.models.io import save_model_dir
from lmforge.tokenizers import Tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and far steadier on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GOOD = ["good", "great", "lovely", "fine", "sweet"]
BAD = ["bad", "awful", "vile", "foul", "grim"]
NOUNS = ["food", "play", "king", "night", "song", "day"]


def sentiment_records(n: int, seed: int) -> list[dict]:
    """'the <noun> was <adjective>': positive or negative by the adjective."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        word = rng.choice(GOOD if label == "pos" else BAD)
        out.append({"text": f"the {rng.choice(NOUNS)} was {word}", "label": label})
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return str(path)


TEXT = " ".join(
    f"the {n} was {a}. who says hello? ROMEO: hello there." for n in NOUNS for a in GOOD + BAD
)


def make_base(tmp_path, preset: str, algorithm: str, name: str, **fields):
    torch.manual_seed(0)
    tokenizer = Tokenizer.train([TEXT] * 5, algorithm, 300 if algorithm != "char" else None)
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "dropout": 0.0}
    config = load_model_preset(preset, {**shape, "vocab_size": tokenizer.vocab_size, **fields})
    directory = tmp_path / name
    save_model_dir(Transformer(config), directory)
    tokenizer.save(directory)
    return directory


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {
        "encoder": make_base(root, "bert", "wordpiece", "encoder"),
        "decoder": make_base(root, "gpt2", "bpe", "decoder"),
        "encoder-decoder": make_base(root, "bart", "bpe", "encdec"),
    }
