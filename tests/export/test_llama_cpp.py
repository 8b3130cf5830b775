"""llama.cpp itself runs our GGUF files (through llama-cpp-python, built from its PyPI source):
its greedy continuation equals ours token for token in f32, its tokenizer cuts text into our
BPE ids, and a q8_0 file agrees on the first tokens with a perplexity on held-out text within
1% of the f32 file's.

Slow (building llama-cpp-python takes 5 to 15 minutes once); run with
    .venv/bin/pip install llama-cpp-python && .venv/bin/python -m pytest -m slow tests/export
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.export.gguf import export_gguf
from lmforge.infer import Sampling, generate
from lmforge.models import from_pretrained
from lmforge.tokenizers import Tokenizer
from tests.export.model_dirs import HELD_OUT, gpt2_dir, llama_dir

pytestmark = pytest.mark.slow

try:
    import llama_cpp
except ImportError:  # pragma: no cover - depends on the machine
    llama_cpp = None

needs_llama_cpp = pytest.mark.skipif(
    llama_cpp is None,
    reason="llama-cpp-python is not installed (.venv/bin/pip install llama-cpp-python; "
    "it builds llama.cpp from source, 5-15 minutes)",
)
F32 = 0  # GGML_TYPE_F32: keep llama.cpp's KV cache in f32 (its default is f16)


def load(path, n_ctx: int):
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=1,
        logits_all=True,
        type_k=F32,
        type_v=F32,
        verbose=False,
    )


def llama_greedy(llm, prompt: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def llama_perplexity(llm, ids: list[int]) -> float:
    llm.reset()
    llm.eval(ids)
    logits = torch.from_numpy(np.array(llm.scores[: len(ids) - 1], dtype=np.float32))
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return math.exp(nll.item())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama_cpp")
    return {"gpt2": gpt2_dir(root / "gpt2"), "llama": llama_dir(root / "llama"), "root": root}


@needs_llama_cpp
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_llama_cpp_greedy_equals_ours_in_f32(models, name):
    model_dir = models[name]
    path = models["root"] / f"{name}.gguf"
    export_gguf(model_dir, path, "f32", overwrite=True)
    model = from_pretrained(model_dir)
    tok = Tokenizer.load(model_dir)
    prompt = tok.encode("First Citizen:\nBefore we proceed")
    n = model.config.block_size - len(prompt)
    ours = generate(model, [prompt], n, Sampling(temperature=0))[0].ids
    llm = load(path, model.config.block_size)
    assert llm.n_vocab() == model.config.vocab_size
    assert llama_greedy(llm, prompt, n) == ours
    # and the logits themselves, position by position
    llm.reset()
    llm.eval(prompt + ours[:-1])
    with torch.no_grad():
        want = model(torch.tensor([prompt + ours[:-1]]))[0]
    got = torch.from_numpy(np.array(llm.scores[: llm.n_tokens], dtype=np.float32))
    torch.testing.assert_close(got, want, rtol=1e-3, atol=2e-3)
    if name == "gpt2":  # llama.cpp's byte-level BPE cuts text into our ids
        for text in ["First Citizen:\nBefore we proceed", HELD_OUT, " two  spaces\n\nand 123"]:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)


@needs_llama_cpp
def test_q8_0_agrees_on_first_tokens_and_perplexity_within_1_percent(models):
    model_dir = models["gpt2"]
    model = from_pretrained(model_dir)
    tok = Tokenizer.load(model_dir)
    paths = {}
    for dtype in ("f32", "q8_0"):
        paths[dtype] = models["root"] / f"ppl-{dtype}.gguf"
        export_gguf(model_dir, paths[dtype], dtype, overwrite=True)
    n_ctx = model.config.block_size
    f32, q8 = load(paths["f32"], n_ctx), load(paths["q8_0"], n_ctx)
    prompt = tok.encode("First Citizen:\nBefore we proceed")
    assert llama_greedy(q8, prompt, 8) == llama_greedy(f32, prompt, 8)
    ids = tok.encode(HELD_OUT)
    windows = [ids[i : i + n_ctx] for i in range(0, len(ids) - 1, n_ctx)]
    windows = [w for w in windows if len(w) > 1]
    ppl = {
        name: math.exp(
            sum(math.log(llama_perplexity(llm, w)) * (len(w) - 1) for w in windows)
            / sum(len(w) - 1 for w in windows)
        )
        for name, llm in (("f32", f32), ("q8_0", q8))
    }
    assert abs(ppl["q8_0"] / ppl["f32"] - 1) < 0.01, ppl
