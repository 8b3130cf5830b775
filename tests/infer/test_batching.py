"""Continuous batching: a request's tokens do not depend on the others in the batch.

The reference is `generate` (its own decoder and cache, checked against transformers in
test_generate.py) on the request alone; the scheduler must give the same greedy tokens
alone and among 8 concurrent requests that join at different steps, have different prompt
lengths, lengths to generate and sampling settings, and leave at different steps.
"""

import copy

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.infer import Sampling, generate
from lmforge.infer.batching import Request, Scheduler
from lmforge.models import Transformer
from tests.numerics import model_lengths, reorder_bound

CONFIGS = {
    # GPT-2-like: learned positions, LayerNorm, MHA
    "gpt2": ModelConfig(vocab_size=97, block_size=160, n_layer=2, n_head=4, n_embd=32),
    # Llama-like: RoPE, RMSNorm, SwiGLU, grouped-query attention
    "llama": ModelConfig(
        vocab_size=97,
        block_size=160,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        positions="rope",
        norm="rmsnorm",
        mlp="gated",
        activation="silu",
        bias=False,
    ),  # fmt: skip
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    m = Transformer(CONFIGS[request.param]).eval()
    with torch.no_grad():  # sharper distributions than the init, so ties are unlikely
        for p in m.parameters():
            p.mul_(4.0)
    return m


def prompt(length: int, offset: int) -> list[int]:
    return [(offset + 7 * i) % 97 for i in range(length)]


def alone(model, request: Request) -> list[int]:
    sched = Scheduler(model, max_batch=1)
    seq = sched.submit(request)
    sched.run_until_idle()
    return seq.ids


def test_greedy_alone_equals_generate(model):
    p = prompt(11, 3)
    ref = generate(model, [p], 20, Sampling(temperature=0))[0].ids
    assert alone(model, Request(p, 20)) == ref


def test_greedy_is_the_same_among_8_concurrent_requests(model):
    # Greedy requests of different lengths, one that grows past the first KV capacity
    # (128), and sampled / penalized neighbours that share their decode steps.
    greedy = [
        Request(prompt(5, 1), 30),
        Request(prompt(17, 2), 20),
        Request(prompt(100, 3), 45),  # 145 positions: the slot buffers must grow
        Request(prompt(1, 4), 25),
    ]
    others = [
        Request(prompt(8, 5), 20, Sampling(temperature=0.9, top_k=10), seed=1),
        Request(prompt(30, 6), 16, Sampling(temperature=1.2, top_p=0.8), seed=2),
        Request(prompt(3, 7), 40, Sampling(temperature=0, frequency_penalty=0.5)),
        Request(prompt(12, 8), 15, Sampling(temperature=0.7, min_p=0.1, presence_penalty=1), 3),
    ]
    expected = [alone(model, r) for r in greedy + others]
    sched = Scheduler(model, max_batch=8, prefill_chunk=16)  # long prompts over several steps
    order = [greedy[0], others[0], greedy[1], others[1], greedy[2], others[2], greedy[3]]
    seqs = {}
    for r in order:  # each joins a running batch, a step after the previous
        seqs[id(r)] = sched.submit(r)
        sched.step()
    seqs[id(others[3])] = sched.submit(others[3])
    sched.run_until_idle()
    got = [seqs[id(r)].ids for r in greedy + others]
    assert max(sched.batch_sizes) == 8  # all of them did decode together
    assert got == expected
    # the greedy ones are also generate()'s tokens
    for r, ids in zip(greedy, got):
        assert ids == generate(model, [r.prompt], r.max_new_tokens, GREEDY_SAMPLING)[0].ids
    assert not sched.running and not sched.waiting


GREEDY_SAMPLING = Sampling(temperature=0)


def test_penalties_count_the_prompt_as_generate_does(model):
    s = Sampling(temperature=0, repetition_penalty=1.8, frequency_penalty=0.3)
    p = prompt(9, 4)
    assert alone(model, Request(p, 15, s)) == generate(model, [p], 15, s)[0].ids


def test_seeded_sampling_is_reproducible_and_seeds_differ(model):
    s = Sampling(temperature=1.0)
    p = prompt(4, 9)
    a = alone(model, Request(p, 20, s, seed=7))
    assert a == alone(model, Request(p, 20, s, seed=7))
    assert a != alone(model, Request(p, 20, s, seed=8))


def test_finish_reasons_logprobs_and_cancel(model):
    p = prompt(6, 2)
    ref = generate(model, [p], 12, GREEDY_SAMPLING, logprobs=True)[0]
    sched = Scheduler(model, max_batch=4)
    stop_at = ref.ids[4]
    by_id = sched.submit(Request(p, 12, stop_ids=[stop_at]))
    by_callback = sched.submit(Request(p, 12, on_token=lambda s, c: len(s.ids) == 3))
    with_logprobs = sched.submit(Request(p, 12, logprobs=True, top_logprobs=3))
    context = sched.submit(Request(prompt(150, 1), 100))  # 160 - 150 = 10 tokens of room
    cancelled = sched.submit(Request(p, 100))
    sched.step()
    sched.step()
    cancelled.cancel()
    sched.run_until_idle()
    assert by_id.finish_reason == "stop" and by_id.ids == ref.ids[: ref.ids.index(stop_at)]
    assert by_callback.finish_reason == "stop" and by_callback.ids == ref.ids[:3]
    assert with_logprobs.finish_reason == "length" and with_logprobs.ids == ref.ids
    got = [c.logprob for c in with_logprobs.choices]
    assert got == pytest.approx(ref.logprobs, abs=1e-4)
    for c in with_logprobs.choices:  # the chosen greedy token is the most likely one
        assert len(c.top) == 3 and c.top[0][0] == c.id
        assert c.top[0][1] >= c.top[1][1] >= c.top[2][1]
    assert context.finish_reason == "length" and len(context.ids) == 10
    assert cancelled.finish_reason == "cancelled" and len(cancelled.ids) < 100
    assert not sched.running and not sched.waiting


def test_more_requests_than_slots_wait_and_all_finish(model):
    sched = Scheduler(model, max_batch=2)
    reqs = [Request(prompt(3 + i, i), 5 + i) for i in range(5)]
    seqs = [sched.submit(r) for r in reqs]
    sched.run_until_idle()
    assert max(sched.batch_sizes) == 2
    assert [s.ids for s in seqs] == [alone(model, r) for r in reqs]


def test_background_thread_serves_concurrent_submits(model):
    sched = Scheduler(model, max_batch=4).start()
    try:
        reqs = [Request(prompt(5 + i, i), 10) for i in range(6)]
        seqs = [sched.submit(r) for r in reqs]
        assert all(s.wait(60) for s in seqs)
    finally:
        sched.stop(60)
    assert [s.ids for s in seqs] == [alone(model, r) for r in reqs]


def test_bad_requests_and_models_are_refused(model):
    sched = Scheduler(model)
    with pytest.raises(LmforgeError, match="empty"):
        sched.submit(Request([], 5))
    with pytest.raises(LmforgeError, match="context"):
        sched.submit(Request(prompt(160, 0), 5))
    with pytest.raises(LmforgeError, match="max_new_tokens"):
        sched.submit(Request([1], -1))
    encoder = Transformer(
        ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, arch="encoder")
    )
    with pytest.raises(LmforgeError, match="decoder-only"):
        Scheduler(encoder)


def counting(model, calls: list):
    """`model` whose body records the length of each row it is given."""
    body = model.body

    def counted(ids, **kw):
        calls.append(ids.shape)
        return body(ids, **kw)

    model.body = counted
    return model


def test_prompt_pieces_ride_in_the_decode_step(model):
    a, b, c = Request(prompt(3, 1), 12), Request(prompt(20, 2), 10), Request(prompt(9, 3), 8)
    expected = [alone(model, r) for r in (a, b, c)]
    calls = []
    sched = Scheduler(counting(copy.copy(model), calls), max_batch=4, prefill_chunk=16)
    seqs = [sched.submit(a)]
    sched.step()  # a's prompt alone
    seqs += [sched.submit(b), sched.submit(c)]
    sched.step()  # a's token and 16 of b's 20 prompt tokens, in one pass
    sched.step()  # a's token, b's last 4 and all 9 of c's
    assert calls == [(1, 3), (1, 1 + 16), (1, 1 + 4 + 9)]
    assert len(sched.running) == 3 and not sched.waiting
    sched.run_until_idle()
    assert len(calls) == sched.steps  # one forward pass per step, all along
    assert [s.ids for s in seqs] == expected


def test_a_separate_decode_model_gets_its_own_pass(model):
    prefill_calls, decode_calls = [], []
    sched = Scheduler(
        counting(copy.copy(model), prefill_calls),
        max_batch=4,
        decode_model=counting(copy.deepcopy(model), decode_calls),
    )
    reqs = [Request(prompt(5, 1), 6), Request(prompt(7, 2), 6)]
    seqs = [sched.submit(r) for r in reqs]
    sched.run_until_idle()
    assert prefill_calls == [(1, 12)] and all(s == (1, 2) for s in decode_calls[:5])
    assert [s.ids for s in seqs] == [alone(model, r) for r in reqs]


def test_prompt_logprobs_equal_one_forward_pass_over_the_prompt(model):
    p = prompt(17, 5)
    with torch.no_grad():
        logits = model(torch.tensor([p]))[0].float()
    reference = logits.log_softmax(-1)  # (17, vocab)
    sched = Scheduler(model, max_batch=4, prefill_chunk=5)  # the prompt in 4 pieces
    neighbour = sched.submit(Request(prompt(4, 1), 30))
    sched.step()
    scored = sched.submit(Request(p, 3, prompt_logprobs=True, top_logprobs=2))
    score_only = sched.submit(Request(p, 0, prompt_logprobs=True))
    sched.run_until_idle()
    assert scored.prompt_choices[0].id == p[0] and scored.prompt_choices[0].logprob is None
    got = [c.logprob for c in scored.prompt_choices[1:]]
    want = [float(reference[j - 1, p[j]]) for j in range(1, 17)]
    # two fp32 evaluations of the same logits in another grouping, then a log-sum-exp
    bound = reorder_bound(
        model_lengths(model, 17) + [model.config.vocab_size], float(logits.abs().max())
    )
    assert got == pytest.approx(want, abs=bound)
    for j, c in enumerate(scored.prompt_choices[1:], start=1):
        values, ids = reference[j - 1].topk(2)
        assert [i for i, _ in c.top] == ids.tolist()
        assert [v for _, v in c.top] == pytest.approx(values.tolist(), abs=bound)
    assert [c.id for c in scored.prompt_choices] == p
    assert scored.ids == alone(model, Request(p, 3))  # scoring does not change the answer
    assert score_only.finish_reason == "length" and score_only.ids == []
    assert [c.logprob for c in score_only.prompt_choices[1:]] == pytest.approx(want, abs=bound)
    assert neighbour.ids == alone(model, Request(prompt(4, 1), 30))


def test_logit_bias_bans_and_forces_tokens(model):
    p = prompt(6, 3)
    greedy = alone(model, Request(p, 8))
    banned = alone(model, Request(p, 8, logit_bias={greedy[0]: -100}))
    assert banned[0] != greedy[0]
    with torch.no_grad():
        ranked = model(torch.tensor([p]))[0, -1].argsort(descending=True).tolist()
    assert banned[0] == ranked[1]  # the runner-up takes its place
    assert alone(model, Request(p, 8, logit_bias={5: 100})) == [5] * 8
    sampled = Request(p, 8, Sampling(temperature=1.0), seed=3, logit_bias={7: 100})
    assert alone(model, sampled) == [7] * 8
    with pytest.raises(LmforgeError, match="logit_bias"):
        Scheduler(model).submit(Request(p, 8, logit_bias={97: 1}))


def test_a_step_with_nothing_to_run_is_a_no_op(model):
    sched = Scheduler(model, max_batch=2)
    sched.step()  # idle
    cancelled = sched.submit(Request(prompt(5, 1), 5))
    cancelled.cancel()
    sched.step()  # the only request leaves before it reaches the model
    assert cancelled.finish_reason == "cancelled" and not sched.busy
    done = sched.submit(Request(prompt(5, 1), 5))
    sched.run_until_idle()
    assert done.ids == alone(model, Request(prompt(5, 1), 5))
