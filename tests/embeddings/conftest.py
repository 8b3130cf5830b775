"""Small corpora with known structure, so training tests run in about a second."""

from __future__ import annotations

import numpy as np
import pytest

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "mouse", "bird"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "plane", "file", "axe"]
FILLER = ["the", "a", "and", "of", "with", "near", "by", "then"]


@pytest.fixture(scope="session")
def topic_sentences() -> list[list[str]]:
    """Sentences that each draw their content words from one topic, mixed with filler words:
    words of one topic share contexts, words of different topics never do."""
    rng = np.random.default_rng(0)
    sentences = []
    for i in range(3000):
        topic = ANIMALS if i % 2 else TOOLS
        words = []
        for _ in range(12):
            pool = topic if rng.random() < 0.6 else FILLER
            words.append(pool[rng.integers(len(pool))])
        sentences.append(words)
    return sentences
