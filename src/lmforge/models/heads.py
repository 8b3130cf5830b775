"""Task heads on top of the Transformer body, one per `ModelConfig.head`, and pooling.

Each head maps the body's output to a tensor:
    lm                       next-token logits (batch, time, vocab)
    mlm                      masked-token logits (batch, time, vocab): dense, act, norm, then
                             the (tied) vocabulary projection with a bias, as BERT's
    sequence-classification  class logits (batch, num_labels) from the pooled vector
    token-classification     class logits per token (batch, time, num_labels)
    question-answering       span logits (batch, time, 2): [..., 0] start, [..., 1] end
    none                     the final hidden states (batch, time, n_embd)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.mlp import ACTIVATIONS
from lmforge.nn.norm import make_norm


@dataclass
class BodyOutput:
    """What the Transformer body computes before a head.

    hidden: final hidden states of the last stack (the decoder's, for an encoder-decoder);
    mask: the attention mask of those positions (1 = token, 0 = padding), or None;
    pooled: the pooler's output (BERT), or None;
    encoder_hidden: the encoder's output of an encoder-decoder, or None;
    attentions: on request, per-layer weights (batch, heads, t_q, t_k) under "encoder",
        "decoder" and "cross".
    """

    hidden: torch.Tensor
    mask: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    encoder_hidden: torch.Tensor | None = None
    attentions: dict[str, list[torch.Tensor]] | None = None


class Pooler(nn.Module):
    """BERT's sentence vector: tanh(W h_[CLS] + b)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(c.n_embd, c.n_embd)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def last_token(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state of each sequence's last real token (left or right padding)."""
    if mask is None:
        return hidden[:, -1]
    positions = torch.arange(1, mask.size(1) + 1, device=mask.device)
    last = (mask.long() * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The average of the real tokens' hidden states (sentence-transformers' mean pooling)."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class LMHead(nn.Module):
    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.out = nn.Linear(c.n_embd, c.vocab_size, bias=c.head_bias)
        if c.tie_embeddings:
            self.out.weight = embedding.weight

    def forward(self, body: BodyOutput) -> torch.Tensor:
        return self.out(body.hidden)


class MLMHead(nn.Module):
    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.transform = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.act = ACTIVATIONS[c.activation]()
        self.norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias)
        self.out = nn.Linear(c.n_embd, c.vocab_size)
        if c.tie_embeddings:
            self.out.weight = embedding.weight

    def forward(self, body: BodyOutput) -> torch.Tensor:
        return self.out(self.norm(self.act(self.transform(body.hidden))))


class SequenceClassificationHead(nn.Module):
    """Logits from one vector per sequence, the one `config.sequence_pooling` names. A base trained
    to make sentence vectors by mean pooling (sentence-transformers) wants mean here: its
    [CLS] state and pooler were never trained to summarise the sentence."""

    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.pooling = c.sequence_pooling
        if self.pooling == "pooler" and not c.pooler:
            raise ValueError("pooling 'pooler' needs a model with a pooler (pooler: true)")
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.n_embd, c.num_labels)

    def forward(self, body: BodyOutput) -> torch.Tensor:
        if self.pooling == "pooler":
            vector = body.pooled
        elif self.pooling == "last":
            vector = last_token(body.hidden, body.mask)
        elif self.pooling == "mean":
            vector = mean_pool(body.hidden, body.mask)
        else:
            vector = body.hidden[:, 0]
        return self.out(self.dropout(vector))


class TokenClassificationHead(nn.Module):
    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.n_embd, c.num_labels)

    def forward(self, body: BodyOutput) -> torch.Tensor:
        return self.out(self.dropout(body.hidden))


class QuestionAnsweringHead(nn.Module):
    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.out = nn.Linear(c.n_embd, 2)

    def forward(self, body: BodyOutput) -> torch.Tensor:
        return self.out(body.hidden)


class NoHead(nn.Module):
    def __init__(self, c: ModelConfig, embedding: nn.Embedding):
        super().__init__()

    def forward(self, body: BodyOutput) -> torch.Tensor:
        return body.hidden


HEADS: dict[str, type[nn.Module]] = {
    "lm": LMHead,
    "mlm": MLMHead,
    "sequence-classification": SequenceClassificationHead,
    "token-classification": TokenClassificationHead,
    "question-answering": QuestionAnsweringHead,
    "none": NoHead,
}
