"""`lmforge chat MODEL`: an interactive conversation; /reset forgets it, /exit (or EOF) ends."""

from __future__ import annotations

import sys

from lmforge.cli.generate import add_sampling_arguments, load_for_generation, sampling_from


def register(sub) -> None:
    p = sub.add_parser("chat", help="talk with a model, turn by turn, with its chat template")
    p.add_argument("model", help="run or model directory")
    p.add_argument("--system", default=None, help="a system message to start each conversation")
    add_sampling_arguments(p)
    p.set_defaults(run=run)


def run(args, extra) -> int:
    from lmforge.infer import TextStream, generate
    from lmforge.infer.chat import DEFAULT_STOP, DEFAULT_TEMPLATE, load_chat_template

    model, decode_model, tokenizer = load_for_generation(args)
    template = load_chat_template(args.model)
    stops = list(args.stop) + ([] if template else DEFAULT_STOP)
    template = template or DEFAULT_TEMPLATE
    sampling = sampling_from(args)
    start = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    eot = [i for i in [tokenizer.eot_id] if i is not None]
    print("lmforge chat: /reset starts over, /exit ends", file=sys.stderr)
    while True:
        print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history = list(start)
            print("(conversation reset)")
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        ids = _fitting_prompt(tokenizer, template, history, model.config.block_size)
        stream = TextStream(tokenizer, stops)

        def on_token(row: int, token: int, stream=stream) -> bool:
            print(stream.push(token), end="", flush=True)
            return stream.stopped

        print("model> ", end="", flush=True)
        generate(
            model,
            [ids],
            args.max_new_tokens,
            sampling,
            stop_ids=eot,
            seed=args.seed,
            on_token=on_token,
            decode_model=decode_model,
        )
        print(stream.finish())
        history.append({"role": "assistant", "content": stream.text.strip()})


def _fitting_prompt(tokenizer, template, history, context: int) -> list[int]:
    """The rendered conversation's ids; the oldest turns go first when it is too long,
    leaving room to answer (a quarter of the context)."""
    from lmforge.errors import LmforgeError
    from lmforge.infer.chat import render_chat

    turns = list(history)
    while True:
        ids = tokenizer.encode(render_chat(template, turns), add_special_tokens=False)
        if len(ids) <= context * 3 // 4:
            return ids
        keep_system = 1 if turns and turns[0]["role"] == "system" else 0
        if len(turns) - keep_system <= 1:
            raise LmforgeError(
                f"the message alone is {len(ids)} tokens, more than this model's context of "
                f"{context} allows; send a shorter one"
            )
        del turns[keep_system]
