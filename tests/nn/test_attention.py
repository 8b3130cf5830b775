import pytest
import torch

from lmforge.nn import MultiHeadAttention, attention, attention_weights
from tests.numerics import assert_reordered_close, assert_same


def sdpa_lengths(d: int, t_k: int) -> list[int]:
    """Reductions of one attention: the scores q.k (d), the softmax sum and the weighted
    sum of values (t_k each); see tests/numerics.py."""
    return [d, t_k, t_k]


def module_lengths(n_embd: int, n_head: int, t_k: int) -> list[int]:
    """A multi-head attention module: input projection, one attention, output projection."""
    return [n_embd, *sdpa_lengths(n_embd // n_head, t_k), n_embd]


def qkv(b=2, h=6, kv=6, t_q=7, t_k=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, t_q, d, generator=g),
        torch.randn(b, kv, t_k, d, generator=g),
        torch.randn(b, kv, t_k, d, generator=g),
    )


def padding(b, t_k, lengths) -> torch.Tensor:
    """(b, 1, 1, t_k) boolean key mask, True for the first `lengths[i]` keys."""
    return (torch.arange(t_k)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]


@pytest.mark.parametrize("kv_heads", [6, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_explicit_formula_equals_fused_sdpa(kv_heads, causal, masked):
    q, k, v = qkv(kv=kv_heads)
    mask = padding(2, 7, [7, 4]) if masked else None
    fused = attention(q, k, v, causal=causal, mask=mask, explicit=False)
    explicit = attention(q, k, v, causal=causal, mask=mask, explicit=True)
    assert_reordered_close(explicit, fused, sdpa_lengths(8, 7))


def test_grouped_query_equals_repeated_heads():
    """GQA is MHA whose key/value heads are copies: kv head j serves query heads 3j..3j+2."""
    q, k, v = qkv(kv=2)
    full_k, full_v = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    # the same kernels on copies of the same numbers, up to the order the kernel sums in
    assert_reordered_close(attention(q, k, v), attention(q, full_k, full_v), sdpa_lengths(8, 7))
    # query head 4 belongs to group 1: it must ignore kv head 0 entirely
    k2 = k.clone()
    k2[:, 0] += 5
    changed = (attention(q, k2, v) - attention(q, k, v)).abs().amax(dim=(0, 2, 3))
    assert (changed[:3] > 0).all() and (changed[3:] == 0).all()


def test_cross_attention_shapes_and_padding():
    """Queries of one length over keys of another; padded keys get no weight."""
    q, k, v = qkv(t_q=3, t_k=9)
    mask = padding(2, 9, [9, 5])
    weights = attention_weights(q, k, mask=mask)
    assert weights.shape == (2, 6, 3, 9)
    assert_reordered_close(weights.sum(-1), torch.ones(2, 6, 3), [9, 9])  # softmax, then sum
    assert (weights[1, :, :, 5:] == 0).all()
    v2 = v.clone()
    v2[1, :, 5:] = 100.0  # padded values must not leak into the output
    for explicit in (False, True):
        out, out2 = (attention(q, k, x, mask=mask, explicit=explicit) for x in (v, v2))
        assert_same(out[1], out2[1])  # masked values are multiplied by an exact 0


def test_causal_mask_with_a_prefix_of_keys():
    # The last 3 of 7 positions attending over all 7 keys, as when decoding after a cached
    # prefix, equal the last 3 rows of full causal attention -- on both paths.
    q, k, v = qkv(b=1, h=2, kv=2, d=4)
    full = attention(q, k, v, causal=True, explicit=True)
    for explicit in (True, False):
        tail = attention(q[:, :, -3:], k, v, causal=True, explicit=explicit)
        assert_reordered_close(tail, full[:, :, -3:], sdpa_lengths(4, 7))
        masked = attention(q[:, :, -3:], k, v, causal=True, mask=padding(1, 7, [7]))
        assert_reordered_close(masked, full[:, :, -3:], sdpa_lengths(4, 7))


def test_a_query_with_no_allowed_key_gets_zeros_on_both_paths():
    q, k, v = qkv(b=1, h=1, kv=1, t_q=3, t_k=3)
    mask = torch.tensor([False, True, True])[None, None, None, :]  # left padding of 1
    for explicit in (False, True):
        out = attention(q, k, v, causal=True, mask=mask, explicit=explicit)
        assert torch.isfinite(out).all() and (out[0, 0, 0] == 0).all()


def test_multi_head_matches_torch_multihead_attention():
    """Our Concat(head_1..head_h)W^O against PyTorch's own nn.MultiheadAttention."""
    torch.manual_seed(0)
    n_embd, n_head, t = 24, 3, 9
    ours = MultiHeadAttention(n_embd, n_head, bias=True, causal=True).eval()
    ref = torch.nn.MultiheadAttention(n_embd, n_head, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(2, t, n_embd)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)  # True = may not attend
    expected, expected_weights = ref(x, x, x, attn_mask=mask, average_attn_weights=False)
    for explicit in (False, True):
        ours.explicit = explicit
        assert_reordered_close(ours(x)[0], expected, module_lengths(n_embd, n_head, t))
    out, weights = ours(x, return_weights=True)
    assert_reordered_close(out, expected, module_lengths(n_embd, n_head, t))
    # the weights: projection, scores and the softmax's sum; probabilities, scale <= 1
    assert_reordered_close(weights, expected_weights, [n_embd, n_embd // n_head, t], scale=1.0)


def test_cross_attention_module_matches_torch():
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4).eval()
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 8, 16)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[0, 6:] = False
    expected, _ = ref(x, context, context, key_padding_mask=~keep)
    got, _ = ours(x, context=context, mask=keep[:, None, None, :])
    assert_reordered_close(got, expected, module_lengths(16, 4, 8))


def test_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    layer = MultiHeadAttention(16, 4, n_kv_head=2, causal=True).eval()
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 16)
    # the first 6 rows see the same inputs; only the kernel's blocking may differ
    assert_reordered_close(layer(x)[0][:, :6], layer(y)[0][:, :6], module_lengths(16, 4, 10))
    bidirectional = MultiHeadAttention(16, 4).eval()
    assert not torch.allclose(bidirectional(x)[0][:, :6], bidirectional(y)[0][:, :6])


def test_grouped_query_projections_are_smaller():
    mha, gqa = MultiHeadAttention(48, 6), MultiHeadAttention(48, 6, n_kv_head=2)
    assert gqa.k.weight.shape == (16, 48) and mha.k.weight.shape == (48, 48)
    with pytest.raises(AssertionError):
        MultiHeadAttention(48, 6, n_kv_head=4)
