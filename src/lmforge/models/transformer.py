"""The one Transformer: every architecture here is this class with a different `ModelConfig`.

    decoder           tokens -> embeddings -> causal blocks -> head        (GPT-2, Llama)
    encoder           tokens -> embeddings -> bidirectional blocks -> head (BERT)
    encoder-decoder   source -> encoder; target -> causal blocks that also attend to the
                      encoder's output (cross-attention) -> head        (BART, the 2017 paper)

The token embedding is shared by both stacks of an encoder-decoder and, with
`tie_embeddings`, by the output head. Everything else a stack needs (positions, token types,
embedding norm, blocks, final norm) is in `Stack`. The presets in `configs/models/` and
docs/models.md say which fields make which architecture.

Initialisation follows GPT-2: N(0, 0.02) weights, zero biases, unit norm gains, and residual
projections scaled by 1 / sqrt(2 * n_layer) so the residual stream does not grow with depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.config import ModelConfig
from lmforge.models.heads import HEADS, BodyOutput, Pooler
from lmforge.nn import Block, KVCache, make_norm, rope_angles, sinusoids

RESIDUAL_PROJECTIONS = ("attn.out.weight", "cross.out.weight", "mlp.down.weight")


class Stack(nn.Module):
    """Positions (and token types) added to token embeddings, an optional embedding norm,
    `n_layer` blocks, and the final norm of pre-norm models.

    With `checkpointing` on, a training forward keeps only each block's input and recomputes
    the block's activations during the backward pass (see Transformer.checkpoint_activations).
    """

    def __init__(self, c: ModelConfig, n_layer: int, causal: bool, cross: bool, token_types: bool):
        super().__init__()
        self.config = c
        self.pos_embed = None
        if c.positions == "learned":
            self.pos_embed = nn.Embedding(c.block_size + c.position_offset, c.n_embd)
        elif c.positions == "sinusoidal":
            self.register_buffer("sinusoids", sinusoids(c.block_size, c.n_embd), persistent=False)
        self.type_embed = None
        if token_types and c.type_vocab_size:
            self.type_embed = nn.Embedding(c.type_vocab_size, c.n_embd)
        self.embed_norm = (
            make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.embedding_norm else None
        )
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c, causal, cross) for _ in range(n_layer))
        pre = c.norm_position == "pre"
        self.final_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if pre else None
        self.checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list, list]:
        """Token embeddings (batch, t, n_embd) -> (hidden states, self- and cross-attention
        weights per layer, empty unless asked for). Masks are (batch, keys), 1 = token; a
        self-attention mask may also be (batch, queries, keys), the keys each query may see
        (several sequences packed in one row see only their own tokens).
        `positions` (batch, t) numbers each token, for left-padded batches; by default they
        continue from the cache: cache.length, cache.length + 1, ..."""
        c = self.config
        t = x.size(1)
        start = cache.length if cache is not None else 0
        if start + t > c.block_size:
            raise ValueError(f"sequence of {start + t} tokens exceeds block_size {c.block_size}")
        if c.scale_embeddings:
            x = x * math.sqrt(c.n_embd)
        if positions is None:
            positions = torch.arange(start, start + t, device=x.device)
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions + c.position_offset)
        elif c.positions == "sinusoidal":
            x = x + self.sinusoids[positions].to(x.dtype)
        elif c.positions == "rope":
            cos, sin = rope_angles(positions, c.head_width, c.rope_base)
            # per-sequence positions (batch, t, d) broadcast over heads as (batch, 1, t, d)
            rope = (cos[:, None], sin[:, None]) if positions.dim() == 2 else (cos, sin)
        if self.type_embed is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(t, dtype=torch.long, device=x.device)
            x = x + self.type_embed(token_type_ids)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)
        if mask is not None and mask.dim() == 3:  # (batch, queries, keys): packed sequences
            self_mask = mask[:, None].bool()
        else:
            self_mask = None if mask is None else mask[:, None, None, :].bool()
        cross_mask = None if context_mask is None else context_mask[:, None, None, :].bool()
        self_weights, cross_weights = [], []
        # Only a training pass gains from recomputing: without gradients nothing is kept, and
        # a KV cache or returned weights are inference tools.
        recompute = (
            self.checkpointing
            and self.training
            and torch.is_grad_enabled()
            and cache is None
            and not return_weights
        )
        for i, block in enumerate(self.blocks):
            if recompute:
                # Non-reentrant: works with inputs that need no grad, and the recomputation
                # replays the saved RNG state, so dropout draws the same masks.
                x, _, _ = checkpoint(
                    block, x, self_mask, rope, context, cross_mask, use_reentrant=False
                )
                continue
            x, w_self, w_cross = block(
                x,
                self_mask,
                rope,
                context,
                cross_mask,
                cache.layer(i) if cache is not None else None,
                return_weights,
            )
            if return_weights:
                self_weights.append(w_self)
                if w_cross is not None:
                    cross_weights.append(w_cross)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, self_weights, cross_weights


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set (take it from the tokenizer)")
        self.config = c = config
        two_stacks = c.arch == "encoder-decoder"
        self.tok_embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.encoder = None
        if c.arch != "decoder":
            self.encoder = Stack(c, c.n_layer, causal=False, cross=False, token_types=True)
        self.decoder = None
        if c.arch != "encoder":
            self.decoder = Stack(
                c, c.decoder_layers, causal=True, cross=two_stacks, token_types=not two_stacks
            )
        self.pooler = Pooler(c) if c.pooler else None
        self.head = HEADS[c.head](c, self.tok_embed)
        self.init_weights()

    def init_weights(self) -> None:
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The encoder's output (an encoder-decoder computes it once per source, then
        passes it as `encoder_hidden` to every decoding step)."""
        if self.encoder is None:
            raise ValueError("a decoder-only model has no encoder")
        return self.encoder(self.tok_embed(input_ids), attention_mask, token_type_ids)[0]

    def body(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_hidden: torch.Tensor | None = None,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> BodyOutput:
        """Everything before the head. `input_ids` feed the first stack (the encoder of an
        encoder-decoder, whose target goes in as `decoder_input_ids`); `attention_mask` is
        (batch, keys) with 1 for tokens and 0 for padding; `cache` makes the decoder continue
        from the positions it holds (see lmforge.nn.cache); `positions` (batch, t) overrides
        the decoder's (an encoder's, without a decoder) position numbers, as a left-padded
        batch needs."""
        attentions: dict[str, list[torch.Tensor]] = {}
        if self.encoder is not None and encoder_hidden is None:
            encoder_hidden, attentions["encoder"], _ = self.encoder(
                self.tok_embed(input_ids),
                attention_mask,
                token_type_ids,
                return_weights=return_weights,
                positions=positions if self.decoder is None else None,
            )
        if self.decoder is None:  # encoder only
            hidden, mask = encoder_hidden, attention_mask
            encoder_hidden = None
        elif self.encoder is None:  # decoder only
            hidden, attentions["decoder"], _ = self.decoder(
                self.tok_embed(input_ids),
                attention_mask,
                token_type_ids,
                cache=cache,
                return_weights=return_weights,
                positions=positions,
            )
            mask = attention_mask
        else:
            if decoder_input_ids is None:
                raise ValueError("an encoder-decoder needs decoder_input_ids (the target side)")
            hidden, attentions["decoder"], attentions["cross"] = self.decoder(
                self.tok_embed(decoder_input_ids),
                decoder_attention_mask,
                context=encoder_hidden,
                context_mask=attention_mask,
                cache=cache,
                return_weights=return_weights,
                positions=positions,
            )
            mask = decoder_attention_mask
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BodyOutput(
            hidden, mask, pooled, encoder_hidden, attentions if return_weights else None
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The head's output (see lmforge.models.heads): for the default LM head, token ids
        (batch, time) -> next-token logits (batch, time, vocab). Keywords as for `body`."""
        return self.head(self.body(input_ids, attention_mask, token_type_ids, **kwargs))

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique parameters; `non_embedding` leaves out token, position and type tables."""
        return sum(
            p.numel()
            for name, p in self.named_parameters()  # shared (tied) tensors counted once
            if not (non_embedding and name.endswith("_embed.weight"))
        )

    def checkpoint_activations(self, enabled: bool = True) -> None:
        """Activation checkpointing: each block's activations are recomputed in the backward
        pass instead of kept from the forward, for about a third more compute per training
        step; the gradients are the same."""
        for stack in (self.encoder, self.decoder):
            if stack is not None:
                stack.checkpointing = enabled

    def attention_modules(self) -> list[nn.Module]:
        return [
            attn
            for stack in (self.encoder, self.decoder)
            if stack is not None
            for block in stack.blocks
            for attn in (block.attn, block.cross)
            if attn is not None
        ]

    def flops_per_token(self, training: bool = True) -> int:
        """Matmul FLOPs per token: 2 per weight of every Linear layer (output head included)
        forward, twice that again backward, plus attention's QK^T and AV over the full context
        of block_size (the estimate of the PaLM paper, appendix B). Norms, biases and softmax
        are left out; an encoder-decoder counts a source and a target token together."""
        c = self.config
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        width = c.n_head * c.head_width
        attention = 2 * 2 * c.block_size * width * len(self.attention_modules())
        forward = 2 * n_matmul + attention
        return 3 * forward if training else forward
