"""`lmforge generate MODEL --prompt TEXT [--stream] [--num-beams N] ...`"""

from __future__ import annotations

import json
import sys


def add_sampling_arguments(p) -> None:
    """The options that choose tokens; `lmforge chat` takes them too."""
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=50, help="0 keeps the whole vocabulary")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: keep this much mass")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p x the top")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="fix the sampling for reproducibility")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "int8", "mixed"],  # lmforge.infer.precision
        help="weights for the prompt and the decode steps: mixed = fp32 prompt, bf16 decode; "
        "auto: bf16 on fast-bf16 hardware, on other CPUs mixed for one sequence and fp32 for "
        "several, else fp32 (bf16 output can differ slightly from fp32's)",
    )


def load_for_generation(args, rows: int = 1):
    """(model, decode model or None, tokenizer) from args.model in args.precision, `rows`
    being how many sequences decode together."""
    from lmforge.device import pick_device
    from lmforge.infer import load_model_and_tokenizer
    from lmforge.infer.precision import inference_models, resolve

    device = pick_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, device)
    return *inference_models(model, resolve(args.precision, device, rows), rows), tokenizer


def sampling_from(args):
    from lmforge.infer import Sampling

    return Sampling(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
    )


def register(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument(
        "model", help="run or model directory (config.json, model.safetensors, tokenizer)"
    )
    p.add_argument("--prompt", default="\n", help="text to continue")
    add_sampling_arguments(p)
    p.add_argument("--num-beams", type=int, default=1, help="beam search with N beams")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length^this")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--logprobs", action="store_true", help="print each token's log-probability")
    p.set_defaults(run=run)


def run(args, extra) -> int:
    from lmforge.infer import TextStream, generate

    sampling = sampling_from(args)
    model, decode_model, tokenizer = load_for_generation(args, rows=args.num_beams)
    stream = TextStream(tokenizer, args.stop)
    print(args.prompt, end="", flush=True)

    def on_token(row: int, token: int) -> bool:
        piece = stream.push(token)
        if args.stream:
            print(piece, end="", flush=True)
        return stream.stopped

    [result] = generate(
        model,
        [tokenizer.encode(args.prompt, add_special_tokens=False)],
        args.max_new_tokens,
        sampling,
        stop_ids=[i for i in [tokenizer.eot_id] if i is not None],
        seed=args.seed,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        logprobs=args.logprobs,
        on_token=on_token if args.num_beams == 1 else None,
        decode_model=decode_model,
    )
    if args.num_beams > 1:  # beams settle only at the end
        for token in result.ids:
            stream.push(token)
    rest = stream.finish()
    print(rest if args.stream else stream.text, flush=True)
    if args.logprobs:
        tokens = [tokenizer.id_to_token(i) for i in result.ids]
        rows = [{"token": t, "logprob": round(lp, 4)} for t, lp in zip(tokens, result.logprobs)]
        json.dump(rows, sys.stderr, ensure_ascii=False)
        print(file=sys.stderr)
    return 0
