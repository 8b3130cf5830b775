"""Weight-only int8: close to the float layer, on the kernel's widths and the others."""

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.infer import Sampling, generate
from lmforge.infer.quantize import Int8Linear, quantize_int8
from lmforge.models import Transformer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 96), (12, 16), (7, 5), (768, 50)])
def test_int8_linear_is_close_to_the_float_layer(shape, dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(*shape)
    x = torch.randn(4, 3, shape[0])
    expected = linear(x)
    got = Int8Linear(linear)(x.to(dtype)).float()
    # Rounding each weight moves it by at most scale/2: bound the output error by that.
    scale = linear.weight.abs().amax(1) / 127
    bound = (x.abs().sum(-1, keepdim=True) * scale / 2) * 1.05 + (
        0.05 if dtype != torch.float32 else 1e-5
    )
    assert got.shape == expected.shape
    assert ((got - expected).abs() <= bound).all()


def test_quantized_model_keeps_its_predictions():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=256, block_size=32, n_layer=2, n_head=4, n_embd=64))
    ids = torch.randint(0, 256, (2, 20))
    reference = model(ids).log_softmax(-1)
    quantize_int8(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    got = model(ids).log_softmax(-1)
    # The same most likely token nearly everywhere, and close log-probabilities.
    agree = (got.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree >= 0.9
    assert (got.exp() * (got - reference)).sum(-1).mean() < 0.01  # KL(int8 || fp32)
    [g] = generate(model, [[1, 2, 3]], 5, Sampling(temperature=0))
    assert len(g.ids) == 5
