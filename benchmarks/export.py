"""Why export: decode tokens/s of llama.cpp (GGUF, through llama-cpp-python) and ONNX Runtime
against lmforge's own decode, on the same CPU and thread count, one run.

Models: the demo model (runs/demo, if trained) and a GPT-2-124M-shaped model with random
weights (its byte-level BPE vocabulary of 50257 tokens is synthetic: the 256 bytes, 50000
two-byte merges and <|endoftext|>, enough for the file format; speed does not depend on the
words). Greedy decoding of a 64-token prompt, N new tokens; decode tokens/s counts the tokens
after the first over the time they took (prefill excluded), best of 2 runs. llama.cpp runs
the f32 file (the same arithmetic as ours) and the q8_0 one; ONNX Runtime the fp32 graph with
its key/value cache. The greedy ids of every f32 path must equal lmforge's (llama.cpp's f32
file runs with an f32 KV cache; the q8_0 one with llama.cpp's default f16 cache).

Without llama-cpp-python (it builds llama.cpp from source: `.venv/bin/pip install
llama-cpp-python`), the llama.cpp rows say so and ONNX Runtime is still measured.

Run:  python benchmarks/export.py [--new-tokens 64] [--threads 2] [--skip-124m]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmforge.config import ModelConfig
from lmforge.export import export_gguf, export_onnx
from lmforge.infer import Sampling, generate
from lmforge.models import Transformer, from_pretrained, save_model_dir
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.bpe import BPETokenizer, byte_to_unicode

PROMPT_LEN = 64


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    extras = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags.split()]
    return f"{name} ({', '.join(extras) or 'no AMX/avx512_bf16'})"


def synthetic_bpe(vocab_size: int = 50257) -> BPETokenizer:
    table = byte_to_unicode()
    tokens = [table[b] for b in range(256)]
    merges = []
    for a in range(256):
        for b in range(256):
            if len(tokens) >= vocab_size - 1:
                break
            merges.append((table[a], table[b]))
            tokens.append(table[a] + table[b])
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|endoftext|>"] = len(vocab)
    return BPETokenizer(vocab, merges, ["<|endoftext|>"])


def gpt2_124m(folder: Path) -> Path:
    tok = synthetic_bpe()
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, block_size=1024, n_layer=12,
                                    n_head=12, n_embd=768))  # fmt: skip
    save_model_dir(model, folder)
    tok.save(folder)
    return folder


def best_rate(run, repeat: int = 2) -> tuple[float, list[int]]:
    """Decode tokens/s from the arrival times of the new tokens, best of `repeat`."""
    rate, ids = 0.0, []
    for _ in range(repeat):
        times: list[float] = []
        ids = run(times)
        rate = max(rate, (len(times) - 1) / (times[-1] - times[0]))
    return rate, ids


def ours(model, prompt, n):
    def run(times):
        def on_token(row, token):
            times.append(time.perf_counter())
            return False

        return generate(model, [prompt], n, Sampling(temperature=0), on_token=on_token)[0].ids

    return best_rate(run)


def llama_cpp_run(path, prompt, n, n_ctx, threads, f32_cache):
    import llama_cpp

    # llama.cpp keeps its KV cache in f16 by default; the f32 file gets an f32 cache, so its
    # arithmetic is ours and its greedy ids must be too.
    cache = {"type_k": 0, "type_v": 0} if f32_cache else {}
    # logits_all: llama-cpp-python 0.3 fills `scores` row by row only then; without it the
    # row read below held stale numbers, and the ids looked unequal to ours
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                          n_threads_batch=threads, verbose=False, logits_all=True,
                          **cache)  # fmt: skip

    def run(times):
        llm.reset()
        llm.eval(prompt)
        out = []
        for _ in range(n):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            times.append(time.perf_counter())
            out.append(token)
            if len(out) < n:
                llm.eval([token])
        return out

    return best_rate(run)


def onnx_run(directory, model, prompt, n, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    s = ort.InferenceSession(str(directory / "model.onnx"), options, ["CPUExecutionProvider"])
    c = model.config

    def step(ids, start, past):
        feeds = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, start + len(ids)), np.int64),
            "position_ids": np.arange(start, start + len(ids))[None],
        }
        for i in range(c.n_layer):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[
                2 * i : 2 * i + 2
            ]
        return s.run(None, feeds)

    def run(times):
        empty = np.zeros((1, c.kv_heads, 0, c.head_width), np.float32)
        out = step(prompt, 0, [empty] * (2 * c.n_layer))
        new = []
        for _ in range(n):
            token = int(out[0][0, -1].argmax())
            times.append(time.perf_counter())
            new.append(token)
            if len(new) < n:
                out = step([token], len(prompt) + len(new) - 1, out[1:])
        return new

    return best_rate(run)


def measure(name, model_dir, work, n, threads, have_llama_cpp):
    model = from_pretrained(model_dir)
    c = model.config
    tok = Tokenizer.load(model_dir)
    text = "First Citizen:\nBefore we proceed any further, hear me speak. " * 20
    prompt = tok.encode(text)[:PROMPT_LEN]
    n = min(n, c.block_size - len(prompt))
    rows = {}
    rate, base_ids = ours(model, prompt, n)
    rows["lmforge (PyTorch, fp32)"] = (rate, True)
    onnx_dir = work / f"{name}-onnx"
    export_onnx(model_dir, onnx_dir, overwrite=True)
    rate, ids = onnx_run(onnx_dir, model, prompt, n, threads)
    rows["ONNX Runtime (fp32)"] = (rate, ids == base_ids)
    for dtype in ("f32", "q8_0"):
        label = f"llama.cpp ({dtype})"
        if not have_llama_cpp:
            rows[label] = (None, None)
            continue
        path = work / f"{name}-{dtype}.gguf"
        export_gguf(model_dir, path, dtype, overwrite=True)
        rate, ids = llama_cpp_run(path, prompt, n, c.block_size, threads, dtype == "f32")
        rows[label] = (rate, ids == base_ids)
    return rows, model.num_parameters(), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--demo", default="runs/demo")
    ap.add_argument("--skip-124m", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import llama_cpp  # noqa: F401

        have_llama_cpp = True
    except ImportError:
        have_llama_cpp = False
        print("llama-cpp-python is not installed: no llama.cpp rows "
              "(.venv/bin/pip install llama-cpp-python builds it)")  # fmt: skip
    cpu = cpu_name()
    print(f"CPU: {cpu}, {args.threads} threads (shared with other jobs), greedy, "
          f"{PROMPT_LEN}-token prompt, {args.new_tokens} new tokens, decode tokens/s")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = []
        if (Path(args.demo) / "model.safetensors").is_file():
            models.append(("demo", Path(args.demo)))
        else:
            print(f"{args.demo} has no model.safetensors: the demo rows are skipped (make demo)")
        if not args.skip_124m:
            models.append(("gpt2-124m", gpt2_124m(work / "gpt2-124m")))
        for name, model_dir in models:
            rows, params, n = measure(name, model_dir, work, args.new_tokens, args.threads,
                                      have_llama_cpp)  # fmt: skip
            base = rows["lmforge (PyTorch, fp32)"][0]
            print(f"\n{name} ({params / 1e6:.1f}M parameters, {n} new tokens)")
            print(f"{'runtime':<26}{'tokens/s':>10}{'vs lmforge':>12}  same greedy ids")
            for label, (rate, same) in rows.items():
                if rate is None:
                    print(f"{label:<26}{'n/a':>10}{'':>12}  (llama-cpp-python not built)")
                    continue
                print(f"{label:<26}{rate:>10.1f}{rate / base:>11.2f}x  {same}")
            results[name] = {
                label: None if rate is None else {"tokens_per_s": round(rate, 1),
                                                  "ratio": round(rate / base, 2), "same_ids": same}
                for label, (rate, same) in rows.items()
            }  # fmt: skip
    print(json.dumps({"benchmark": "export", "cpu": cpu, "threads": args.threads,
                      "new_tokens": args.new_tokens, "llama_cpp": have_llama_cpp,
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
