"""Tolerances derived from the computation, for comparing two fp32 evaluations of one formula.

Two evaluations of the same mathematics (ours and transformers', a cached decode and a full
forward, fused and explicit attention, a batch and its rows alone) differ only in the order of
their floating-point sums: each implementation, each tensor shape and each CPU kind (AVX2,
AVX-512, AMX) gets matmul kernels that block and accumulate differently. So a bound that
passed on one machine says nothing about the next; this one follows from the arithmetic.

A sum of k terms in any order is within gamma_k * sum|terms| of the exact sum, where
gamma_k = k*u / (1 - k*u) ~ k*u and u = 2^-24 is fp32's unit roundoff (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., section 3.1). Two orders therefore differ by at
most 2 * k * u * sum|terms|, and through a chain of reductions (a network's matmuls, norms
and softmax sums) the relative errors add, to first order. The bound on |a - b| is

    2 * u * (k_1 + k_2 + ... + k_n) * scale

with the k_i the reduction lengths along the longest path of the computation. `scale` stands
for the magnitude of the summed terms; we take the largest |value| of the reference output.
For terms of random sign sum|terms| is about sqrt(k) times the result, while real rounding
errors grow like sqrt(k) * u rather than k * u (Higham and Mary, SIAM J. Sci. Comput. 2019),
so the two factors of sqrt(k) offset and the bound holds with room on every machine, while a
real bug (a wrong cache position, a missing mask) moves outputs by a large fraction of
`scale` and fails it.

Exactly the same computation (same code path, same shapes, same process) is compared with
`assert_same`: no tolerance at all. Token ids (greedy decoding, beams) are compared exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

U32 = 2.0**-24  # fp32 unit roundoff
U16 = 2.0**-8  # bf16 unit roundoff (8 significant bits)


def reorder_bound(lengths: Iterable[int], scale: float, u: float = U32) -> float:
    """Largest |a - b| between two orders of the chained reductions of `lengths`."""
    return 2.0 * u * sum(lengths) * float(scale)


def transformer_lengths(
    n_layer: int,
    width: int,
    ffn: int,
    head_dim: int,
    seq: int,
    *,
    cross: int = 0,
    head: bool = True,
) -> list[int]:
    """Reduction lengths along a Transformer's longest path: per block, the norm statistics
    (width), the q/k/v projection (width), the scores q.k (head_dim), the weighted sum of
    values (seq), the output projection (width), the second norm (width), the MLP's two
    matmuls (width, ffn); with `cross` memory positions a decoder block adds cross-attention
    (norm, projection, scores, sum over `cross`, output). Then the final norm and the head."""
    block = [width, width, head_dim, seq, width, width, width, ffn]
    if cross:
        block += [width, width, head_dim, cross, width]
    tail = [width, width] if head else [width]
    return block * n_layer + tail


def model_lengths(config, seq: int, *, source: int = 0, head: bool = True) -> list[int]:
    """`transformer_lengths` for an lmforge ModelConfig (or a model holding one): the
    encoder's blocks over `source` positions, then the decoder's over `seq` with
    cross-attention to them (encoder-decoder), or the one stack over `seq`."""
    config = getattr(config, "config", config)
    sizes = dict(width=config.n_embd, ffn=config.mlp_width, head_dim=config.head_width)
    if config.arch == "encoder-decoder":
        encoder = transformer_lengths(config.n_layer, seq=source, head=False, **sizes)
        decoder = transformer_lengths(
            config.decoder_layers, seq=seq, cross=source, head=head, **sizes
        )
        return encoder + decoder
    return transformer_lengths(config.n_layer, seq=seq, head=head, **sizes)


def assert_reordered_close(
    got: torch.Tensor,
    want: torch.Tensor,
    lengths: Iterable[int],
    scale: float | None = None,
    u: float = U32,
) -> None:
    """`got` equals `want` up to the reordering bound of `lengths` (see the module doc)."""
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    if scale is None:
        scale = want.abs().max() if want.numel() else 0.0
    scale = float(torch.as_tensor(scale).detach())
    bound = reorder_bound(list(lengths), max(scale, 1e-30), u)
    torch.testing.assert_close(
        got.detach().to(want.dtype),
        want.detach(),
        atol=bound,
        rtol=0.0,
        msg=lambda m: f"{m}\nbound 2*u*sum(k)*scale = {bound:.3g} (scale {scale:.3g})",
    )


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-for-bit equality: the same computation, run twice."""
    torch.testing.assert_close(got, want, atol=0.0, rtol=0.0)
