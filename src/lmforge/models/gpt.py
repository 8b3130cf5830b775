"""GPT: a decoder-only Transformer language model, in the GPT-2 shape.

Departures from the 2017 paper, all as in GPT-2: pre-norm blocks (LayerNorm before attention
and MLP, plus a final LayerNorm), learned absolute positions instead of sinusoids, GELU in
the MLP, input embedding and output head tied, residual projections initialised smaller
(std / sqrt(2 * n_layer)) so the residual stream does not grow with depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn import Block


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set (take it from the tokenizer)")
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(
                c.n_embd,
                c.n_head,
                c.mlp_ratio * c.n_embd,
                c.bias,
                c.dropout,
                explicit_attention=c.attention == "explicit",
            )
            for _ in range(c.n_layer)
        )
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.init_weights()

    def init_weights(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # LayerNorm gains
                nn.init.ones_(p)
            elif name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (batch, time) -> next-token logits (batch, time, vocab)."""
        t = idx.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique parameters; `non_embedding` leaves out token and position embeddings."""
        n = sum(p.numel() for p in self.parameters())  # shared (tied) tensors counted once
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def flops_per_token(self, training: bool = True) -> int:
        """Matmul FLOPs per token: 2 per weight of every Linear layer (output head included)
        forward, twice that again backward, plus attention's QK^T and AV over the full context
        (the estimate of the PaLM paper, appendix B). Norms, biases and softmax are left out."""
        c = self.config
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        forward = 2 * n_matmul + 2 * 2 * c.n_layer * c.block_size * c.n_embd
        return 3 * forward if training else forward
