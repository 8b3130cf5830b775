"""The official `openai` client against a server on 127.0.0.1: completions and chat, whole
and streamed, usage, finish reasons, stop strings, log-probabilities, seeds, n, and many
clients at once. The expected text comes from the engine directly (`generate`, or a
forward pass per token without a cache), not from the server."""

from __future__ import annotations

import threading

import pytest
import torch

from lmforge.infer import Sampling, TextStream, generate
from lmforge.infer.chat import DEFAULT_STOP, DEFAULT_TEMPLATE, render_chat
from lmforge.infer.loading import load_model_and_tokenizer

openai = pytest.importorskip("openai")

PROMPT = "USER: good day"


@pytest.fixture(scope="module")
def reference(model_dir):
    model, tok = load_model_and_tokenizer(model_dir)
    return model.eval(), tok


GREEDY = Sampling(temperature=0)


def expected(reference, ids, n, stops=(), sampling=GREEDY):
    """(text, finish_reason, tokens generated) of `generate` with the server's stop rules."""
    model, tok = reference
    stream = TextStream(tok, list(stops))
    out = generate(model, [ids], n, sampling, stop_ids=[tok.eot_id], on_token=lambda r, t: (
        stream.push(t), stream.stopped)[1])[0]  # fmt: skip
    return stream.text + stream.finish(), out.finish_reason, len(out.ids)


def test_models_list(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert server.client().models.retrieve("tiny").id == "tiny"


def test_greedy_completion_equals_the_engine(server, reference):
    _, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    text, reason, count = expected(reference, ids, 40)
    r = server.client().completions.create(
        model="tiny", prompt=PROMPT, max_tokens=40, temperature=0
    )
    assert r.object == "text_completion"
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == reason
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == count
    assert r.usage.total_tokens == len(ids) + count


def test_streamed_completion_is_the_whole_one_in_pieces(server):
    c = server.client()
    whole = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0)
    chunks = list(
        c.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=30, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and set(reasons[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # usage comes last
    assert all(ch.usage is None for ch in chunks[:-1])
    assert len(chunks) > 3  # it really came in pieces


def test_chat_whole_and_streamed_equal_the_engine_with_the_template(server, reference):
    _, tok = reference
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    ids = tok.encode(render_chat(DEFAULT_TEMPLATE, messages), add_special_tokens=False)
    text, reason, count = expected(reference, ids, 50, DEFAULT_STOP)
    c = server.client()
    r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=50, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), count)
    stream = c.chat.completions.create(
        model="tiny", messages=messages, max_tokens=50, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text
    assert chunks[-1].choices[0].finish_reason == reason
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)


def test_stop_strings_end_the_text_before_them(server, reference):
    _, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    text, _, _ = expected(reference, ids, 40)
    stop = text[5:7]
    assert len(stop) == 2 and stop in text
    c = server.client()
    for given in (stop, ["zzzq", stop]):
        r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0,
                                 stop=given)  # fmt: skip
        assert r.choices[0].text == text[: text.index(stop)]
        assert r.choices[0].finish_reason == "stop"


def test_logprobs_are_the_engines(server, reference):
    model, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    ref = generate(model, [ids], 8, Sampling(temperature=0), stop_ids=[0], logprobs=True)[0]
    c = server.client()
    r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens == [tok.decode([i]) for i in ref.ids]
    assert lp.token_logprobs == pytest.approx(ref.logprobs, abs=1e-4)
    assert all(len(top) == 2 for top in lp.top_logprobs)
    starts = [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.text_offset == starts
    chat = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        temperature=0, logprobs=True, top_logprobs=3,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].token == item.token  # greedy: the most likely one
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)


def test_echo_with_logprobs_scores_the_prompt_as_one_forward_pass(server, reference):
    """lm-evaluation-harness's use of the API: echo, logprobs and max_tokens 0 give each
    prompt token's log-probability given those before it."""
    model, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].float().log_softmax(-1)
    want = [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
    c = server.client()
    scored = c.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
    ).choices[0]
    assert scored.text == PROMPT and scored.finish_reason == "length"
    lp = scored.logprobs
    assert lp.tokens == [tok.decode([i]) for i in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(want[1:], abs=1e-4)
    assert lp.text_offset == [len(tok.decode(ids[:j])) for j in range(len(ids))]
    assert all(len(top) == 1 for top in lp.top_logprobs[1:])
    # with new tokens: the prompt's entries, then the answer's, whole and streamed alike
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=1)
    whole = c.completions.create(**kwargs).choices[0]
    plain = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
    assert whole.text == PROMPT + plain.choices[0].text
    assert whole.logprobs.token_logprobs[: len(ids)] == lp.token_logprobs
    assert len(whole.logprobs.tokens) == len(ids) + plain.usage.completion_tokens
    assert whole.logprobs.text_offset[len(ids)] == len(PROMPT)
    chunks = [ch.choices[0] for ch in c.completions.create(stream=True, **kwargs) if ch.choices]
    assert "".join(ch.text for ch in chunks) == whole.text
    streamed = [x for ch in chunks if ch.logprobs for x in ch.logprobs.token_logprobs]
    assert streamed == whole.logprobs.token_logprobs


def test_logit_bias_bans_and_forces_tokens(server, reference):
    model, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].float()
    ranked = logits.argsort(descending=True).tolist()
    c = server.client()
    first = c.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1,
        logit_bias={str(ranked[0]): -100},
    ).choices[0]  # fmt: skip
    assert first.text == tok.decode([ranked[1]])  # the runner-up, and the model's own logprob
    want = float(logits.log_softmax(-1)[ranked[1]])
    assert first.logprobs.token_logprobs[0] == pytest.approx(want, abs=1e-4)
    forced = ranked[5]  # an unlikely token, forced at every step
    chat = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        temperature=1.0, seed=1, logit_bias={str(forced): 100},
    )  # fmt: skip
    assert chat.choices[0].message.content == tok.decode([forced] * 4)


def test_best_of_returns_the_choice_with_the_best_mean_logprob(server):
    c = server.client()
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=12, temperature=1.0, seed=9)
    every = c.completions.create(n=4, logprobs=0, **kwargs)
    means = [sum(ch.logprobs.token_logprobs) / len(ch.logprobs.token_logprobs)
             for ch in every.choices]  # fmt: skip
    best = c.completions.create(best_of=4, **kwargs)  # choice k still draws with seed + k
    assert [ch.index for ch in best.choices] == [0]
    assert best.choices[0].text == every.choices[means.index(max(means))].text
    assert best.choices[0].logprobs is None  # ranked by them, returned only when asked
    assert best.usage.completion_tokens == every.usage.completion_tokens  # all 4 generated
    two = c.completions.create(best_of=4, n=2, **kwargs)
    order = sorted(range(4), key=lambda k: -means[k])[:2]
    assert [ch.text for ch in two.choices] == [every.choices[k].text for k in order]


def test_penalties_count_generated_tokens_only_as_openai_defines(server, reference):
    """Greedy with presence and frequency penalties against a plain loop: a full forward
    pass per token (no cache), logits - frequency x count - presence x (count > 0) over
    the tokens generated so far."""
    model, tok = reference
    ids = tok.encode(PROMPT, add_special_tokens=False)
    seq, counts = list(ids), torch.zeros(model.config.vocab_size)
    with torch.no_grad():
        for _ in range(20):
            logits = model(torch.tensor([seq]))[0, -1].float()
            logits = logits - 0.7 * counts - 1.3 * (counts > 0).float()
            nxt = int(logits.argmax())
            if nxt == tok.eot_id:
                break
            seq.append(nxt)
            counts[nxt] += 1
    r = server.client().completions.create(
        model="tiny", prompt=PROMPT, max_tokens=20, temperature=0,
        frequency_penalty=0.7, presence_penalty=1.3,
    )  # fmt: skip
    assert r.choices[0].text == tok.decode(seq[len(ids) :])


def test_same_seed_same_text_and_n_choices(server):
    c = server.client()
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=30, temperature=1.0, top_p=0.95,
                  extra_body={"top_k": 20, "min_p": 0.01})  # fmt: skip
    a = c.completions.create(seed=5, **kwargs).choices[0].text
    assert a == c.completions.create(seed=5, **kwargs).choices[0].text
    assert a != c.completions.create(seed=6, **kwargs).choices[0].text
    r = c.completions.create(seed=5, n=3, **kwargs)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert r.choices[0].text == a  # choice k draws with seed + k
    assert len({ch.text for ch in r.choices}) > 1
    two = c.completions.create(model="tiny", prompt=[PROMPT, "ASSISTANT:"], max_tokens=5, n=2)
    assert [ch.index for ch in two.choices] == [0, 1, 2, 3]


def test_null_fields_take_the_apis_defaults(server):
    """The API lets a client send null for an optional field (LangChain does): null
    temperature is 1, null max_tokens is 16 for completions, null stop is none."""
    import httpx

    nulls = dict(temperature=None, top_p=None, n=None, stop=None, max_tokens=None,
                 presence_penalty=None, frequency_penalty=None, logprobs=None, user=None,
                 stream=None, stream_options=None)  # fmt: skip
    body = {"model": "tiny", "prompt": PROMPT, "seed": 3, **nulls}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=30).json()
    same = server.client().completions.create(model="tiny", prompt=PROMPT, seed=3)
    assert r["choices"][0]["text"] == same.choices[0].text
    assert r["usage"]["completion_tokens"] == same.usage.completion_tokens <= 16


def test_same_seed_same_text_alone_and_among_concurrent_requests(server):
    """A seeded sampled request gives the same text when it runs alone and when 5 others
    with other settings share its decode steps (its generator is its own)."""
    c = server.client()
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0.9, top_p=0.9,
                  seed=11, stream=True)  # fmt: skip

    def text(**kw):
        return "".join(ch.choices[0].text for ch in c.completions.create(**kw))

    alone = text(**kwargs)
    got = {}
    others = [dict(kwargs, seed=i, temperature=0.5 + 0.2 * i, max_tokens=20 + 9 * i)
              for i in range(5)]  # fmt: skip
    jobs = [kwargs] + others
    threads = [
        threading.Thread(target=lambda i=i, kw=kw: got.__setitem__(i, text(**kw)))
        for i, kw in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got[0] == alone and len(got) == len(jobs)


def test_seeds_at_the_ends_of_the_int64_range(server):
    c = server.client()
    for seed in (-(2**63), 2**63 - 1):
        r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, seed=seed, n=2)
        again = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, seed=seed, n=2)
        assert [ch.text for ch in r.choices] == [ch.text for ch in again.choices]


def test_eight_concurrent_clients_get_their_own_greedy_text(server):
    c = server.client()
    prompts = [PROMPT[: 4 + i] for i in range(8)]
    lengths = [10 + 7 * i for i in range(8)]
    alone = [
        c.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0).choices[0].text
        for p, n in zip(prompts, lengths)
    ]
    got = [None] * 8

    def ask(i):
        stream = c.completions.create(
            model="tiny", prompt=prompts[i], max_tokens=lengths[i], temperature=0, stream=True
        )
        got[i] = "".join(ch.choices[0].text for ch in stream)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == alone
    assert server.backend.metrics.step_batch.collect()[0].samples  # decode steps were observed


def scrape(server) -> dict:
    """/metrics read by prometheus_client's own parser: {(name, labels): value}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_tokens_and_latencies(server):
    """Deltas of /metrics over a few requests equal what the responses say."""
    c = server.client()
    before = scrape(server)
    whole = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    usage_too = {"include_usage": True}
    chunks = list(c.completions.create(model="tiny", prompt=PROMPT, max_tokens=9, stream=True,
                                       stream_options=usage_too, temperature=0))  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="nope", prompt="hi")
    after = scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    usages = [whole.usage, chunks[-1].usage]
    generated = sum(u.completion_tokens for u in usages)
    assert delta("lmforge_requests_total", endpoint="/v1/completions", status="200") == 2
    assert delta("lmforge_requests_total", endpoint="/v1/completions", status="404") == 1
    assert delta("lmforge_generated_tokens_total") == generated
    assert delta("lmforge_prompt_tokens_total") == sum(u.prompt_tokens for u in usages)
    assert delta("lmforge_time_to_first_token_seconds_count") == 2  # one per sequence
    assert delta("lmforge_inter_token_latency_seconds_count") == generated - 2
    assert delta("lmforge_request_duration_seconds_count") == 2
    assert after[("lmforge_requests_in_flight", ())] == 0
    assert after[("lmforge_batch_size", ())] == 0 and after[("lmforge_queue_depth", ())] == 0
