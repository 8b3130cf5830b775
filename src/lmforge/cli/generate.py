"""`lmforge generate RUN_DIR --prompt TEXT`"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument(
        "model", help="run or model directory (config.json, model.safetensors, tokenizer)"
    )
    p.add_argument("--prompt", default="\n", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=50, help="0 keeps the whole vocabulary")
    p.add_argument("--seed", type=int, default=None, help="fix the sampling for reproducibility")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(run=run)


def run(args, extra) -> int:
    from lmforge.device import pick_device
    from lmforge.infer import generate, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, pick_device(args.device))
    ids = generate(
        model,
        tokenizer.encode(args.prompt, add_special_tokens=False),
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.seed,
        stop_ids=tuple(i for i in [tokenizer.eot_id] if i is not None),
    )
    print(args.prompt + tokenizer.decode(ids))
    return 0
