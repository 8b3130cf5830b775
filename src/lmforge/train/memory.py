"""What a training run will hold in memory, estimated before it starts.

- parameters and gradients: the bytes of every (unique) parameter, once each; weights and
  gradients stay fp32 under bf16 autocast;
- optimizer state: fp32 tensors the size of each parameter (AdamW and Adam: 2, the moments;
  Adadelta: 2; RMSprop: 1, plus the momentum buffer with momentum; SGD: the momentum buffer
  only with momentum), and a scalar step count per parameter tensor where torch keeps one;
- activations: what the forward pass saves for the backward pass, counted tensor by tensor
  from the shapes (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", count the same way). With activation checkpointing a block keeps only
  its input, and one block's activations are rebuilt at a time in the backward pass.

The activation figure is an estimate: temporaries that live only inside one operation and the
allocator's slack are left out (tests/train/test_memory.py compares it with what a forward and
backward pass actually save). It describes one process holding the whole model: FSDP and
tensor parallelism divide the first three figures among the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmforge.config import ModelConfig, TrainConfig

# Optimizer -> (fp32 state tensors per parameter, scalar step count per parameter tensor).
_STATE = {
    "adamw": (2, True),  # exp_avg, exp_avg_sq
    "adam": (2, True),
    "adadelta": (2, True),  # square_avg, acc_delta
    "rmsprop": (1, True),  # square_avg (+ momentum_buffer)
    "sgd": (0, False),  # (momentum_buffer)
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, for one process holding the whole model."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations

    def line(self, optimizer: str, checkpointing: bool) -> str:
        how = ", activation checkpointing" if checkpointing else ""
        return (
            f"memory (estimate): {_size(self.parameters)} parameters + {_size(self.gradients)} "
            f"gradients + {_size(self.optimizer)} {optimizer} state + "
            f"{_size(self.activations)} activations{how} = {_size(self.total)}"
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def estimate_memory(model: nn.Module, train: TrainConfig, precision: str) -> MemoryEstimate:
    """For a micro-batch of `train.batch_size` windows of the model's block_size; `precision`
    as resolved ('fp32' or 'bf16'). The model may live on the meta device."""
    params = list(model.parameters())  # each shared (tied) tensor once
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    trained = [p for p in params if p.requires_grad]
    grad_bytes = sum(p.numel() * p.element_size() for p in trained)
    per_param, step_count = _STATE[train.optimizer]
    if train.optimizer in {"sgd", "rmsprop"} and train.momentum > 0:
        per_param += 1
    optimizer_bytes = per_param * sum(p.numel() * 4 for p in trained)  # state is fp32
    if step_count:
        optimizer_bytes += 4 * len(trained)  # one fp32 scalar per tensor
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    activations = activation_bytes(
        model.config,
        train.batch_size,
        precision,
        train.activation_checkpointing,
        matmul_weights,
    )
    return MemoryEstimate(param_bytes, grad_bytes, optimizer_bytes, activations)


def activation_bytes(
    c: ModelConfig,
    batch_size: int,
    precision: str = "fp32",
    checkpointing: bool = False,
    matmul_weights: int = 0,
) -> int:
    """Bytes saved for the backward pass by one training forward of `batch_size` sequences of
    `c.block_size` tokens (an encoder-decoder: source and target of that length each).
    `matmul_weights` (elements of the Linear weights) counts the bf16 copies autocast keeps."""
    t = c.block_size
    a = 2 if precision == "bf16" else 4  # what matmuls read and write under autocast
    width, attn_width = c.n_embd, c.n_head * c.head_width

    def norm() -> float:  # fp32 input and statistics; RMSNorm also keeps x / rms before the gain
        if c.norm == "layernorm":
            return 4 * width + 8
        return 8 * width + 4

    def attention_sublayer() -> float:
        # the norm, the projections' input, q and k, v repeated to every head, the output
        n = norm() + a * width + 4 * a * attn_width
        math_path = c.attention == "explicit" or c.dropout > 0  # SDPA's fused kernels aside
        if c.attention == "explicit":  # softmax weights (fp32 under autocast), masked copy
            n += (4 + a) * c.n_head * t
        if c.dropout > 0:  # the dropout mask (and in SDPA's math path the dropped weights)
            n += (1 if c.attention == "explicit" else 3) * a * c.n_head * t
        if not math_path:
            n += 4 * c.n_head  # the fused kernel's log-sum-exp per query and head
        if c.dropout > 0:
            n += a * width  # the residual dropout's mask
        return n

    def mlp_sublayer() -> float:
        hidden = (4 if c.mlp == "gated" else 2) * c.mlp_width  # before and after the activation
        return norm() + a * width + a * hidden + (a * width if c.dropout > 0 else 0)

    def layer(cross: bool) -> float:
        return attention_sublayer() * (2 if cross else 1) + mlp_sublayer()

    stacks = []  # (blocks, cross-attention)
    if c.arch != "decoder":
        stacks.append((c.n_layer, False))
    if c.arch != "encoder":
        stacks.append((c.decoder_layers, c.arch == "encoder-decoder"))
    per_token = 0.0
    largest = 0.0
    for n_layer, cross in stacks:
        per_token += 8 + (a * width if c.dropout > 0 else 0)  # token ids, embedding dropout
        per_token += norm() if c.embedding_norm else 0
        if checkpointing:  # each block's fp32 input; one block rebuilt at a time
            per_token += n_layer * 4 * width
            largest = max(largest, layer(cross))
        else:
            per_token += n_layer * layer(cross)
    # the head's input (after the final norm of pre-norm models), the loss's fp32
    # log-probabilities and the targets
    per_token += (norm() if c.norm_position == "pre" else 0) + a * width
    if c.head in {"lm", "mlm"}:
        per_token += 4 * c.vocab_size + 8
    copies = 2 * matmul_weights if precision == "bf16" else 0
    return int(batch_size * t * (per_token + largest) + copies)
