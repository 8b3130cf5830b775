import torch

from lmforge.nn import MultiHeadAttention, attention


def test_explicit_formula_equals_fused_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    for causal in (True, False):
        fused = attention(q, k, v, causal=causal, explicit=False)
        explicit = attention(q, k, v, causal=causal, explicit=True)
        torch.testing.assert_close(explicit, fused, atol=1e-6, rtol=1e-5)


def test_causal_mask_with_a_prefix_of_keys():
    # The last 3 of 7 positions attending over all 7 keys, as when decoding after a cached
    # prefix, equal the last 3 rows of full causal attention -- on both paths.
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    full = attention(q, k, v, causal=True, explicit=True)
    for explicit in (True, False):
        tail = attention(q[:, :, -3:], k, v, causal=True, explicit=explicit)
        torch.testing.assert_close(tail, full[:, :, -3:], atol=1e-6, rtol=1e-5)


def test_multi_head_matches_torch_multihead_attention():
    """Our Concat(head_1..head_h)W^O against PyTorch's own nn.MultiheadAttention."""
    torch.manual_seed(0)
    n_embd, n_head, t = 24, 3, 9
    ours = MultiHeadAttention(n_embd, n_head, bias=True).eval()
    ref = torch.nn.MultiheadAttention(n_embd, n_head, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(2, t, n_embd)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)  # True = may not attend
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    for explicit in (False, True):
        ours.explicit = explicit
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)


def test_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    layer = MultiHeadAttention(16, 4).eval()
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 16)
    torch.testing.assert_close(layer(x)[:, :6], layer(y)[:, :6])
