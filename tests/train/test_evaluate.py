import math

import numpy as np
import torch

from lmforge.data import eval_windows
from lmforge.train import evaluate


class Uniform(torch.nn.Module):
    """Predicts every token with equal probability: loss is exactly ln(V)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab) + self.dummy


def test_uniform_model_loss_and_bits_per_byte():
    vocab = 10
    token_bytes = torch.tensor([0] + [1] * 5 + [3] * 4)  # id 0 is a special token
    tokens = np.array([0, 1, 2, 6, 7, 0, 3, 9, 4, 5, 8, 1, 0, 2], dtype=np.uint16)
    result = evaluate(Uniform(vocab), eval_windows(tokens, 4, 2), token_bytes, torch.device("cpu"))
    targets = tokens[1:]
    counted = targets[token_bytes.numpy()[targets] > 0]
    assert result["tokens"] == len(counted)
    assert math.isclose(result["loss"], math.log(vocab), rel_tol=1e-6)
    expected_bpb = len(counted) * math.log2(vocab) / token_bytes.numpy()[targets].sum()
    assert math.isclose(result["bpb"], expected_bpb, rel_tol=1e-6)
