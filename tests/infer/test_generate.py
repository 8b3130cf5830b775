import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.infer import generate, sample_next
from lmforge.models import GPT

transformers = pytest.importorskip("transformers")

CFG = ModelConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = GPT(CFG).eval()
    for p in m.parameters():
        p.data.add_(0.2 * torch.randn_like(p))  # sharper distributions than the init
    return m


def test_greedy_equals_transformers_generate(model):
    from tests.models.test_gpt import to_hf_gpt2

    hf = to_hf_gpt2(model)
    prompt = [5, 17, 3]
    ours = generate(model, prompt, max_new_tokens=10, temperature=0)
    ref = hf.generate(
        torch.tensor([prompt]),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=0,
        attention_mask=torch.ones(1, 3, dtype=torch.long),
    )
    assert ours == ref[0, 3:].tolist()


def test_context_is_cropped_to_block_size(model):
    out = generate(model, list(range(1, 15)), max_new_tokens=10, temperature=0)
    assert len(out) == 10


def test_seed_reproducible_and_stop_tokens(model):
    a = generate(model, [1, 2], 30, temperature=1.0, seed=3)
    b = generate(model, [1, 2], 30, temperature=1.0, seed=3)
    assert a == b
    stop = a[5]
    assert (
        generate(model, [1, 2], 30, temperature=1.0, seed=3, stop_ids=(stop,)) == a[: a.index(stop)]
    )


def test_top_k_only_draws_from_the_k_most_likely():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0]])
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 2, gen)) for _ in range(200)}
    assert draws == {1, 3}
    assert int(sample_next(logits, 1.0, 1, gen)) == 1
    assert int(sample_next(logits, 0.0, 0, gen)) == 1


def test_bad_settings(model):
    with pytest.raises(LmforgeError, match="prompt is empty"):
        generate(model, [], 5)
    with pytest.raises(LmforgeError, match="temperature"):
        generate(model, [1], 5, temperature=-1)
