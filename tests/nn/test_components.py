import math

import torch

from lmforge.nn import MLP, RMSNorm, apply_rope, rope_angles, sinusoids
from tests.numerics import assert_reordered_close, assert_same


def test_sinusoids_follow_the_formula():
    table = sinusoids(50, 16)
    pos, i = 37, 3
    assert math.isclose(table[pos, 2 * i], math.sin(pos / 10000 ** (2 * i / 16)), abs_tol=1e-5)
    assert math.isclose(table[pos, 2 * i + 1], math.cos(pos / 10000 ** (2 * i / 16)), abs_tol=1e-5)
    assert sinusoids(4, 5).shape == (4, 5)  # odd widths work too


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        cos, sin = rope_angles(torch.tensor([m, n]), 8, base=100.0)
        return (apply_rope(q, cos[0], sin[0]) * apply_rope(k, cos[1], sin[1])).sum()

    # An 8-term dot product, over angles of up to 13 radians each rounded by 13u or less.
    terms = (q.abs() * k.abs()).sum()
    assert_reordered_close(score(3, 1), score(13, 11), [8, 13, 13], scale=terms)
    assert_same(score(0, 0), (q * k).sum())  # position 0 is no rotation: cos 1, sin 0 exactly
    assert not torch.allclose(score(3, 1), score(1, 3))


def test_rope_is_a_rotation_of_half_split_pairs():
    cos, sin = rope_angles(torch.tensor([2]), 4, base=10.0)
    x = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # pair (x_0, x_2) turns by angle 2 * 10^0 = 2 radians
    # one rounding each (torch's cos/sin are within an ulp of the true value)
    expected = torch.tensor([math.cos(2), 0, math.sin(2), 0])
    assert_reordered_close(apply_rope(x, cos, sin)[0], expected, [1], scale=1.0)
    assert_reordered_close(apply_rope(x, cos, sin).norm(), x.norm(), [1, 4], scale=1.0)


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    ours, ref = RMSNorm(12, eps=1e-6), torch.nn.RMSNorm(12, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 12)
    assert_reordered_close(ours(x), ref(x), [12])  # the mean of 12 squares


def test_gated_mlp_is_swiglu():
    torch.manual_seed(0)
    mlp = MLP(8, 20, bias=False, activation="silu", gated=True)
    x = torch.randn(2, 8)
    expected = mlp.down(torch.nn.functional.silu(mlp.gate(x)) * mlp.up(x))
    assert_same(mlp(x), expected)  # the same operations in the same order
    assert sum(p.numel() for p in mlp.parameters()) == 3 * 8 * 20
