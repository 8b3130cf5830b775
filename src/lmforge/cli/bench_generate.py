"""`lmforge bench-generate MODEL`: how fast this model prefills and decodes here."""

from __future__ import annotations

import json
import time


def register(sub) -> None:
    p = sub.add_parser(
        "bench-generate", help="time prompt prefill and token decoding of a model on this machine"
    )
    p.add_argument("model", help="run or model directory")
    p.add_argument(
        "--prompt-tokens", type=int, default=None, help="default: 128, or what the context leaves"
    )
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--precision", action="append", choices=["fp32", "bf16", "int8", "mixed"],
        default=None, help="repeatable; default fp32, bf16 and mixed",
    )  # fmt: skip
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(run=run)


def run(args, extra) -> int:
    import copy

    import torch

    from lmforge.device import pick_device
    from lmforge.errors import LmforgeError
    from lmforge.infer import Sampling, generate, load_model_and_tokenizer
    from lmforge.infer.precision import inference_models

    asked = args.prompt_tokens
    if (asked is not None and asked < 1) or args.new_tokens < 2 or args.batch < 1:
        raise LmforgeError("give --prompt-tokens >= 1, --new-tokens >= 2 and --batch >= 1")
    model, tokenizer = load_model_and_tokenizer(args.model, pick_device(args.device))
    context = model.config.block_size
    if asked is not None and asked + args.new_tokens > context:
        raise LmforgeError(
            f"--prompt-tokens {asked} + --new-tokens {args.new_tokens} exceed the model's "
            f"context of {context}; lower them"
        )
    prompt_tokens = min(asked or 128, context - args.new_tokens)
    if prompt_tokens < 1:
        raise LmforgeError(f"--new-tokens must be below the model's context ({context})")
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(
        0, tokenizer.vocab_size, (args.batch, prompt_tokens), generator=generator
    )
    rows = []
    for precision in args.precision or ["fp32", "bf16", "mixed"]:
        variant, decode_variant = inference_models(copy.deepcopy(model), precision)

        def timed(n, variant=variant, decode_variant=decode_variant):
            start = time.perf_counter()
            greedy = Sampling(temperature=0)
            generate(variant, prompts.tolist(), n, greedy, decode_model=decode_variant)
            return time.perf_counter() - start

        timed(2)  # warm up
        prefill = timed(1)
        total = timed(args.new_tokens)
        rate = (args.new_tokens - 1) * args.batch / (total - prefill)
        rows.append({"precision": precision, "prefill_s": prefill, "decode_tok_s": rate})
        print(f"{precision:6} prefill {prefill:.3f} s   decode {rate:.1f} tokens/s", flush=True)
    print(json.dumps({"prompt_tokens": prompt_tokens, "batch": args.batch, "results": rows}))
    return 0
