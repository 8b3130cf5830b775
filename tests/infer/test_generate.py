"""The generation engine against transformers' generate(), on the same random weights."""

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.infer import Sampling, generate
from lmforge.infer.generate import StaticCache
from lmforge.models import Transformer, from_pretrained
from lmforge.nn import KVCache
from tests.numerics import assert_reordered_close, model_lengths

transformers = pytest.importorskip("transformers")
from tests.models.test_hf import HF_MODELS  # noqa: E402

PROMPTS = [[5, 17, 3, 99, 250], [7, 1, 42], [600, 2, 9, 11, 13, 8, 4]]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    """(transformers model, the same weights in lmforge), both fp32 in eval mode."""
    torch.manual_seed(0)
    hf = HF_MODELS[request.param]().eval()
    with torch.no_grad():  # sharper distributions than the init, so ties are unlikely
        for p in hf.parameters():
            p.mul_(4.0)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, from_pretrained(folder).eval()


def hf_generate(hf, prompts, **kwargs):
    """transformers' generate() on left-padded prompts; the new tokens of each, pads cut."""
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    out = hf.generate(ids, attention_mask=mask, pad_token_id=0, **kwargs)
    return [row[width:].tolist() for row in out]


def strip(ids, eos):
    return ids[: ids.index(eos)] if eos in ids else ids


def test_greedy_equals_transformers_single_and_batched(pair):
    hf, ours = pair
    for prompts in ([PROMPTS[0]], PROMPTS):  # one prompt; three of different lengths (padding)
        ref = hf_generate(hf, prompts, max_new_tokens=12, do_sample=False)
        got = generate(ours, prompts, 12, Sampling(temperature=0))
        assert [g.ids for g in got] == ref


def test_greedy_with_repetition_penalty_equals_transformers(pair):
    hf, ours = pair
    ref = hf_generate(hf, [PROMPTS[0]], max_new_tokens=12, do_sample=False, repetition_penalty=1.5)
    got = generate(ours, [PROMPTS[0]], 12, Sampling(temperature=0, repetition_penalty=1.5))
    assert got[0].ids == ref[0]


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (0.5, True)])
def test_beam_search_equals_transformers(pair, length_penalty, early_stopping):
    hf, ours = pair
    settings = dict(num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    # A stop token the beams meet: the first of greedy decoding's tokens that ends a beam.
    for eos in hf_generate(hf, PROMPTS[:1], max_new_tokens=6, do_sample=False)[0]:
        ref = hf_generate(
            hf, PROMPTS[:2], max_new_tokens=10, do_sample=False, eos_token_id=eos, **settings
        )
        if any(eos in r for r in ref):
            break
    got = generate(ours, PROMPTS[:2], 10, stop_ids=[eos], **settings)
    assert [g.ids for g in got] == [strip(r, eos) for r in ref]
    assert any(g.finish_reason == "stop" for g in got)  # the stop token mattered


def test_cached_decoding_equals_full_forward(pair):
    _, ours = pair
    ids = torch.tensor([PROMPTS[2] + [3, 8, 21, 5]])
    full = ours(ids)
    for cache in (KVCache(), StaticCache(ids.size(1))):
        steps = [ours(ids[:, :4], cache=cache)]
        steps += [ours(ids[:, i : i + 1], cache=cache) for i in range(4, ids.size(1))]
        assert_reordered_close(torch.cat(steps, dim=1), full, model_lengths(ours, ids.size(1)))


def test_logprobs_are_the_models():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=32))
    [g] = generate(model, [[1, 2, 3]], 5, Sampling(temperature=0), logprobs=True)
    ids = torch.tensor([[1, 2, 3] + g.ids])
    logits = model(ids)
    expected = logits.log_softmax(-1)[0, 2:-1].gather(1, torch.tensor(g.ids)[:, None])[:, 0]
    # cached steps against one forward; a log-probability is a logit less the log of a sum
    # over the vocabulary, so it moves by up to twice the logits' bound
    lengths = [*model_lengths(model, ids.size(1)), model.config.vocab_size] * 2
    assert_reordered_close(torch.tensor(g.logprobs), expected, lengths, logits.abs().max())


def test_sampling_is_seeded_stops_and_slides_past_the_context():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=32))
    s = Sampling(temperature=1.0)
    [a] = generate(model, [[1, 2]], 40, s, seed=3)  # 42 tokens > block_size 16
    [b] = generate(model, [[1, 2]], 40, s, seed=3)
    assert a.ids == b.ids and len(a.ids) == 40 and a.finish_reason == "length"
    stop = a.ids[5]
    [c] = generate(model, [[1, 2]], 40, s, seed=3, stop_ids=[stop])
    assert c.ids == a.ids[: a.ids.index(stop)] and c.finish_reason == "stop"
    # Past the context, each step re-reads the last block_size tokens, as without a cache.
    [greedy] = generate(model, [[1, 2]], 30, Sampling(temperature=0))
    ids = [1, 2]
    for _ in range(30):
        ids.append(int(model(torch.tensor([ids[-16:]]))[0, -1].argmax()))
    assert greedy.ids == ids[2:]


def test_bad_input_is_refused():
    model = Transformer(ModelConfig(vocab_size=61, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(LmforgeError, match="empty"):
        generate(model, [[]], 5)
    with pytest.raises(LmforgeError, match="context is 16"):
        generate(model, [list(range(20))], 5)
    with pytest.raises(LmforgeError, match="num_beams"):
        generate(model, [[1]], 5, num_beams=0)
    with pytest.raises(LmforgeError, match="top_p"):
        generate(model, [[1]], 5, Sampling(top_p=0))


def test_encoder_decoder_equals_transformers(tmp_path):
    """BART: sources of different lengths (padded on the right, as HF pads them), greedy
    with a repetition penalty, and beam search."""
    torch.manual_seed(0)
    hf = HF_MODELS["bart"]().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    sources = [[5, 17, 3, 99, 250, 2], [7, 1, 42, 2]]
    ids = torch.ones(2, 6, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = torch.tensor(source)
        mask[row, : len(source)] = 1

    def reference(eos, **kwargs):
        out = hf.generate(
            ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=eos,
            forced_eos_token_id=None, pad_token_id=1, decoder_start_token_id=2, **kwargs,
        )  # fmt: skip
        return [strip(row[1:].tolist(), eos) for row in out]

    greedy = Sampling(temperature=0, repetition_penalty=2.0)
    got = generate(ours, sources, 10, greedy, stop_ids=[999], decoder_start_id=2)
    expected = reference(999, repetition_penalty=2.0)
    assert [g.ids for g in got] == expected
    eos = expected[0][2]
    got = generate(ours, sources, 10, stop_ids=[eos], decoder_start_id=2, num_beams=3)
    assert [g.ids for g in got] == reference(eos, num_beams=3)
