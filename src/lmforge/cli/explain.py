"""`lmforge explain attention|lens|attribute|patch MODEL_DIR --text ... --output DIR` and
`lmforge explain memorization MODEL_DIR --secret ... --output DIR`: look inside a model
(lmforge.interpret). Each writes PNG pictures (and HTML where one helps) with the numbers as
JSON into a new folder, and prints where they are. Everything is computed before the folder
is made, so bad input leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.corpus import add_reading_options

ACTIONS = ("attention", "lens", "attribute", "patch", "memorization")


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="look inside a model: attention maps, logit lens, attribution, patching, memorization",
        description="Pictures (PNG, HTML) and numbers (JSON) of what a model does with a text. "
        "See docs/interpretability.md.",
    )
    cmds = p.add_subparsers(dest="explain_command", metavar="ACTION", required=True)

    def action(name: str, help: str, text: bool = True):
        a = cmds.add_parser(name, help=help, description=help)
        a.add_argument("model", metavar="MODEL_DIR", help="model directory (a run, a fine-tune)")
        if text:
            a.add_argument("--text", required=True, help="the text to explain")
        a.add_argument("--output", required=True, help="folder to write (must be new or empty)")
        a.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
        a.set_defaults(run=run)
        return a

    a = action(
        "attention",
        "attention weights of every layer and head: a grid of all heads per stack, one heatmap "
        "per head of --layer, and an HTML page to pick stack, layer and head",
    )
    a.add_argument("--layer", type=int, help="layer to draw head by head (default: the last)")
    a.add_argument(
        "--target",
        help="encoder-decoder models: the decoder's text (default: the same text); its "
        "cross-attention to --text is drawn too",
    )

    a = action(
        "lens",
        "the logit lens: the likeliest next token read off the residual stream after each "
        "layer, and the loss by layer (on the text, and on --corpus when given)",
    )
    a.add_argument("--top-k", type=int, default=5, help="tokens per layer and position in JSON")
    a.add_argument(
        "--corpus",
        nargs="+",
        help="held-out text for the loss by layer: 'shakespeare' (its held-out plays) or "
        "files; windows of the model's block size",
    )
    a.add_argument("--windows", type=int, default=32, help="windows of --corpus to score")
    add_reading_options(a)

    a = action(
        "attribute",
        "which input tokens a prediction rests on: integrated gradients (or gradient x input) "
        "over the input embeddings, for a language model's next token or a classifier's class",
    )
    a.add_argument(
        "--target",
        help="an LM: the next token to explain (its text, one token, or #ID; default: the "
        "model's top prediction); a classifier: the label (default: the predicted one)",
    )
    a.add_argument(
        "--position",
        type=int,
        default=-1,
        help="an LM: the position whose next-token prediction is explained (default: the last)",
    )
    a.add_argument(
        "--method",
        default="integrated-gradients",
        choices=["integrated-gradients", "gradient-x-input"],
    )
    a.add_argument("--steps", type=int, default=50, help="integrated gradients: quadrature nodes")
    a.add_argument(
        "--quadrature", default="gausslegendre", choices=["gausslegendre", "riemann_trapezoid"]
    )
    a.add_argument(
        "--baseline",
        default="zero",
        help="integrated gradients' starting point: 'zero' (zero vectors) or a token whose "
        "embedding fills every position (its text or #ID, e.g. '[PAD]')",
    )

    a = action(
        "patch",
        "activation patching: copy one layer/position's activation from the clean run (--text) "
        "into the corrupted one and measure logit(--correct) - logit(--incorrect) at the end",
    )
    a.add_argument("--corrupted", required=True, help="the corrupted text (same number of tokens)")
    a.add_argument(
        "--correct", help="the clean answer token (default: the clean run's top prediction)"
    )
    a.add_argument(
        "--incorrect",
        help="the corrupted answer token (default: the corrupted run's top prediction)",
    )
    a.add_argument(
        "--point",
        default="resid_pre",
        choices=["resid_pre", "attn_out", "mlp_out", "resid_post"],
        help="which activation of each block to patch",
    )

    a = action(
        "memorization",
        "what a language model memorised: the exposure of canary secrets (The Secret Sharer) "
        "and a verbatim extraction probe on its training data",
        text=False,
    )
    a.add_argument(
        "--secret",
        action="append",
        default=[],
        help="a digit string put in the training data after --prefix (repeat for more)",
    )
    a.add_argument("--prefix", default="my secret number is", help="the canary's fixed start")
    a.add_argument(
        "--samples", type=int, default=2000, help="alternatives each secret is ranked among"
    )
    a.add_argument(
        "--probes",
        type=int,
        default=64,
        help="training windows for the extraction probe (0: none); from the run's own "
        "data/train split, or --corpus",
    )
    a.add_argument("--probe-prefix", type=int, default=32, help="tokens given to the model")
    a.add_argument("--probe-suffix", type=int, default=50, help="tokens it must reproduce")
    a.add_argument("--corpus", nargs="+", help="training text files for the probe")
    a.add_argument("--seed", type=int, default=0)
    add_reading_options(a)


def run(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.fileio import check_new_directory, staged_directory

    if getattr(args, "text", None) is not None and not args.text.strip():
        raise LmforgeError("--text is empty; give the text to explain")
    check_new_directory(args.output, args.overwrite)
    model, tokenizer = _load(args.model)
    compute = {
        "attention": _attention,
        "lens": _lens,
        "attribute": _attribute,
        "patch": _patch,
        "memorization": _memorization,
    }[args.explain_command]
    writers, numbers, summary = compute(args, model, tokenizer)
    from lmforge.fileio import write_json

    name = args.explain_command
    with staged_directory(args.output) as folder:
        written = [write(folder) for write in writers]
        write_json(folder / f"{name}.json", numbers)
    out = Path(args.output)
    for line in summary:
        print(line)
    for path in [*(Path(p).name for p in written), f"{name}.json"]:
        print(f"-> {out / path}")
    return 0


# ------------------------------------------------------------------ shared pieces


def _load(directory: str):
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.infer import load_model_and_tokenizer

    if not Path(directory).is_dir():
        raise LmforgeError(f"{directory}: no such model directory")
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(directory)
    return model.eval(), tokenizer


def _ids(tokenizer, model, text: str, what: str = "--text"):
    """(1, t) ids of `text` as the model reads it (a template's framing tokens included)."""
    import torch

    from lmforge.errors import LmforgeError

    ids = tokenizer.encode(text)
    if not ids:
        raise LmforgeError(f"{what} gives no tokens")
    if len(ids) > model.config.block_size:
        raise LmforgeError(
            f"{what} is {len(ids)} tokens; the model reads at most {model.config.block_size}"
        )
    return torch.tensor([ids])


def _causal_lm(model, directory: str, action: str) -> None:
    from lmforge.errors import LmforgeError

    if model.config.head != "lm" or model.encoder is not None:
        raise LmforgeError(
            f"explain {action} needs a causal language model; {directory} is a "
            f"{model.config.arch} model with head {model.config.head}"
        )


def _token(tokenizer, text: str, what: str) -> int:
    """One token id from its text, or from '#ID'."""
    from lmforge.errors import LmforgeError

    if text.startswith("#") and text[1:].isdigit():
        token = int(text[1:])
        if token >= tokenizer.vocab_size:
            raise LmforgeError(f"{what} {text}: the vocabulary has {tokenizer.vocab_size} tokens")
        return token
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise LmforgeError(
            f"{what} {text!r} is {len(ids)} tokens {pieces}, not one; give one token "
            "(mind a leading space) or #ID"
        )
    return ids[0]


def _round(x, digits: int = 5):
    """Tensors and floats as JSON numbers."""
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().tolist()
    if isinstance(x, float):
        return round(x, digits) if x == x else None  # NaN -> null
    if isinstance(x, list | tuple):
        return [_round(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    return x


# ------------------------------------------------------------------ the actions


def _attention(args, model, tokenizer):
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.interpret import patterns
    from lmforge.interpret import pictures as pic

    ids = _ids(tokenizer, model, args.text)
    labels = pic.token_labels(tokenizer, ids[0])
    kwargs, names = {}, {}
    if model.encoder is not None and model.decoder is not None:
        target = _ids(tokenizer, model, args.target or args.text, "--target")
        kwargs["decoder_input_ids"] = target
        tl = pic.token_labels(tokenizer, target[0])
        names = {"encoder": (labels, labels), "decoder": (tl, tl), "cross": (tl, labels)}
    elif args.target is not None:
        raise LmforgeError("--target is for encoder-decoder models; this one has one stack")
    else:
        stack = "encoder" if model.encoder is not None else "decoder"
        names = {stack: (labels, labels)}
    with torch.no_grad():
        weights = {k: v[:, 0] for k, v in patterns(model, ids, **kwargs).items()}
    layers = min(w.size(0) for w in weights.values())
    layer = layers - 1 if args.layer is None else args.layer
    if not -layers <= layer < layers:
        raise LmforgeError(f"--layer {args.layer}: the model has layers 0 to {layers - 1}")
    layer %= layers
    writers = []
    for group, w in weights.items():
        q, k = names[group]
        writers.append(
            lambda d, g=group, w=w, q=q, k=k: pic.attention_grid(
                w, q, k, d / f"attention-grid-{g}.png", f"{g} attention, every layer and head"
            )
        )
        for h in range(w.size(1)):
            writers.append(
                lambda d, g=group, w=w, q=q, k=k, h=h: pic.attention_heatmap(
                    w[layer, h], q, k, d / f"attention-{g}-L{layer}-H{h}.png",
                    f"{g} layer {layer} head {h}",
                )
            )  # fmt: skip
    writers.append(
        lambda d: pic.attention_html(
            weights, names, d / "attention.html", f"attention: {args.text}"
        )
    )
    numbers = {
        "text": args.text,
        "tokens": {g: {"queries": q, "keys": k} for g, (q, k) in names.items()},
        "weights": {g: _round(w, 4) for g, w in weights.items()},  # (layers, heads, t_q, t_k)
        # how spread each head's attention is: mean entropy over queries, bits
        "entropy_bits": {
            g: _round(-(w.clamp_min(1e-12).log2() * w).sum(-1).mean(-1), 3)
            for g, w in weights.items()
        },
    }
    summary = [f"{g}: {w.size(0)} layers x {w.size(1)} heads" for g, w in weights.items()]
    return writers, numbers, summary


def _corpus_windows(args, model, tokenizer):
    """(n, block + 1) windows of --corpus, evenly spread; None without --corpus."""
    import numpy as np
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.text import load_shakespeare, read_documents

    if not args.corpus:
        return None
    if args.corpus == ["shakespeare"]:
        docs = load_shakespeare()[1]
    else:
        docs = read_documents(args.corpus, args.text_field, args.invalid_utf8)
    eot = [tokenizer.eot_id] if tokenizer.eot_id is not None else []
    tokens = np.concatenate([np.concatenate([eot, tokenizer.encode_array(d.text)]) for d in docs])
    block = model.config.block_size
    if len(tokens) < block + 1:
        raise LmforgeError(f"--corpus has {len(tokens)} tokens; a window needs {block + 1}")
    if args.windows < 1:
        raise LmforgeError(f"--windows {args.windows}: give at least 1")
    starts = np.linspace(0, len(tokens) - block - 1, args.windows).astype(np.int64)
    return torch.as_tensor(np.stack([tokens[s : s + block + 1] for s in starts]).astype(np.int64))


def _lens(args, model, tokenizer):
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.interpret import pictures as pic
    from lmforge.interpret.lens import lens_losses, logit_lens, top_tokens

    _causal_lm(model, args.model, "lens")
    if args.top_k < 1:
        raise LmforgeError(f"--top-k {args.top_k}: give at least 1")
    ids = _ids(tokenizer, model, args.text)
    windows = _corpus_windows(args, model, tokenizer)
    lens = logit_lens(model, ids)
    probs, top = top_tokens(lens, k=min(args.top_k, lens.size(-1)))
    labels = pic.token_labels(tokenizer, ids[0])
    words = [[pic.token_labels(tokenizer, row[:, 0])[j] for j in range(ids.size(1))] for row in top]
    losses: dict[str, list[float]] = {}
    if ids.size(1) > 1:
        losses["the text"] = lens_losses(lens[:, :, :-1], ids[:, 1:]).tolist()
    if windows is not None:
        with torch.no_grad():
            per = [
                lens_losses(logit_lens(model, w[None, :-1]), w[None, 1:]) for w in windows
            ]  # one window at a time: the lens holds layers x t x vocab logits
        losses["held-out corpus"] = torch.stack(per).mean(0).tolist()
    layers = lens.size(0)
    writers = [
        lambda d: pic.lens_table(probs[..., 0], words, labels, d / "lens.png"),
    ]
    if losses:
        writers.append(lambda d: pic.loss_by_layer(losses, d / "lens-loss.png"))
    numbers = {
        "text": args.text,
        "tokens": labels,
        "layers": ["embed"] + [f"after {i}" for i in range(layers - 1)],
        "top_tokens": [
            [
                [
                    {"token": pic.token_labels(tokenizer, [int(i)])[0], "id": int(i), "p": p}
                    for i, p in zip(top[layer, j].tolist(), _round(probs[layer, j]), strict=True)
                ]
                for j in range(ids.size(1))
            ]
            for layer in range(layers)
        ],
        "loss_by_layer_nats": {k: _round(v) for k, v in losses.items()},
        "corpus_windows": 0 if windows is None else int(windows.size(0)),
    }
    summary = [
        f"loss by layer ({name}, nats/token): " + ", ".join(f"{v:.3f}" for v in values)
        for name, values in losses.items()
    ]
    return writers, numbers, summary


def _classifier_labels(directory: str, model) -> list[str]:
    from lmforge.tasks.base import task_settings

    settings = task_settings(directory) or {}
    labels = settings.get("labels") if settings.get("task") == "classification" else None
    return list(labels) if labels else [str(i) for i in range(model.config.num_labels)]


def _attribute(args, model, tokenizer):
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.interpret import attribute, class_pick, next_token_pick
    from lmforge.interpret import pictures as pic

    head = model.config.head
    if args.steps < 2 and args.method == "integrated-gradients":
        raise LmforgeError(f"--steps {args.steps}: integrated gradients need at least 2")
    baseline = None if args.baseline == "zero" else _token(tokenizer, args.baseline, "--baseline")
    if head == "sequence-classification":
        labels = _classifier_labels(args.model, model)
        enc = tokenizer.tokenize(args.text)
        if not enc.ids:
            raise LmforgeError("--text gives no tokens")
        if len(enc.ids) > model.config.block_size:
            raise LmforgeError(
                f"--text is {len(enc.ids)} tokens; the model reads at most "
                f"{model.config.block_size}"
            )
        ids = torch.tensor([enc.ids])
        kwargs = {
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.tensor([enc.type_ids]),
        }
        with torch.no_grad():
            probs = model(ids, **kwargs)[0].float().softmax(-1)
        if args.target is None:
            target = int(probs.argmax())
        elif args.target in labels:
            target = labels.index(args.target)
        else:
            raise LmforgeError(
                f"--target {args.target!r} is not a label of this classifier; its labels: "
                f"{', '.join(labels)}"
            )
        pick = class_pick(target)
        explained = {"kind": "class", "label": labels[target], "index": target}
        ranked = {labels[i]: float(probs[i]) for i in probs.argsort(descending=True).tolist()}
        what = f"class {labels[target]!r}"
    elif head == "lm" and model.encoder is None:
        ids = _ids(tokenizer, model, args.text)
        t = ids.size(1)
        if not -t <= args.position < t:
            raise LmforgeError(f"--position {args.position}: the text has {t} tokens")
        position = args.position % t
        with torch.no_grad():
            probs = model(ids)[0, position].float().softmax(-1)
        target = int(probs.argmax()) if args.target is None else _token(
            tokenizer, args.target, "--target"
        )  # fmt: skip
        pick = next_token_pick(target, position)
        kwargs = {}
        word = pic.token_labels(tokenizer, [target])[0]
        explained = {"kind": "next token", "token": word, "id": target, "position": position}
        top = probs.topk(min(5, probs.numel()))
        ranked = {
            pic.token_labels(tokenizer, [i])[0]: float(p)
            for p, i in zip(top.values, top.indices.tolist(), strict=True)
        }
        what = f"next token {word!r} after position {position}"
    else:
        raise LmforgeError(
            f"explain attribute needs a causal language model or a sequence classifier; "
            f"{args.model} is a {model.config.arch} model with head {head}"
        )
    result = attribute(
        model,
        ids,
        pick,
        method=args.method,
        baseline=baseline,
        steps=args.steps,
        quadrature_method=args.quadrature,
        **kwargs,
    )
    tokens = pic.token_labels(tokenizer, ids[0])
    title = f"{args.method} for {what} (p = {float(probs[target]):.3f})"
    writers = [
        lambda d: pic.attribution_png(result.scores, tokens, d / "attribution.png", title),
        lambda d: pic.attribution_html(result.scores, tokens, d / "attribution.html", title),
    ]
    numbers = {
        "text": args.text,
        "explained": explained,
        "probability": _round(float(probs[target])),
        "top": _round(ranked),
        "method": args.method,
        "steps": args.steps if args.method == "integrated-gradients" else None,
        "quadrature": args.quadrature if args.method == "integrated-gradients" else None,
        "baseline": args.baseline,
        "tokens": tokens,
        "scores": _round(result.scores, 6),
        "logit_at_input": _round(result.target),
    }
    if args.method == "integrated-gradients":  # gradient x input has neither
        numbers["logit_at_baseline"] = _round(result.baseline)
        numbers["completeness_error"] = _round(result.completeness_error, 8)
    best = sorted(zip(result.scores.tolist(), tokens, strict=True), reverse=True)[:5]
    summary = [
        f"{args.method} for {what}: logit {result.target:.4f}"
        + (
            f" (baseline {result.baseline:.4f}, completeness error {result.completeness_error:.2e})"
            if args.method == "integrated-gradients"
            else ""
        ),
        "most for it: " + ", ".join(f"{tok!r} {s:+.4f}" for s, tok in best),
    ]
    return writers, numbers, summary


def _patch(args, model, tokenizer):
    import torch

    from lmforge.errors import LmforgeError
    from lmforge.interpret import logit_difference, patching_sweep
    from lmforge.interpret import pictures as pic

    _causal_lm(model, args.model, "patch")
    clean = _ids(tokenizer, model, args.text)
    corrupt = _ids(tokenizer, model, args.corrupted, "--corrupted")
    if clean.shape != corrupt.shape:
        raise LmforgeError(
            f"--text and --corrupted must have the same number of tokens (patching copies "
            f"position by position); they have {clean.size(1)} and {corrupt.size(1)}"
        )
    with torch.no_grad():
        clean_top = int(model(clean)[0, -1].argmax())
        corrupt_top = int(model(corrupt)[0, -1].argmax())
    good = clean_top if args.correct is None else _token(tokenizer, args.correct, "--correct")
    bad = (
        corrupt_top if args.incorrect is None else _token(tokenizer, args.incorrect, "--incorrect")
    )
    if good == bad:
        word = pic.token_labels(tokenizer, [good])[0]
        raise LmforgeError(
            f"the correct and incorrect tokens are both {word!r}; the logit difference is 0. "
            "Name two tokens with --correct and --incorrect"
        )
    sweep = patching_sweep(model, clean, corrupt, logit_difference(good, bad), args.point)
    a, b = pic.token_labels(tokenizer, clean[0]), pic.token_labels(tokenizer, corrupt[0])
    tokens = [x if x == y else f"{x}/{y}" for x, y in zip(a, b, strict=True)]
    good_w, bad_w = pic.token_labels(tokenizer, [good, bad])
    title = (
        f"patching {args.point}: share of logit({good_w!r}) - logit({bad_w!r}) restored "
        f"(clean {sweep['clean']:.2f}, corrupted {sweep['corrupt']:.2f})"
    )
    writers = [lambda d: pic.patching_heatmap(sweep["restored"], tokens, d / "patch.png", title)]
    numbers = {
        "clean_text": args.text,
        "corrupted_text": args.corrupted,
        "tokens": tokens,
        "point": args.point,
        "correct": {"token": good_w, "id": good},
        "incorrect": {"token": bad_w, "id": bad},
        "clean_logit_difference": _round(sweep["clean"]),
        "corrupted_logit_difference": _round(sweep["corrupt"]),
        "effects": _round(sweep["effects"]),  # (layers, positions): the metric after a patch
        "restored": _round(sweep["restored"]),  # the share of the clean-corrupt gap closed
    }
    restored = sweep["restored"]
    flat = int(torch.nan_to_num(restored, nan=float("-inf")).argmax())
    layer, pos = divmod(flat, restored.size(1))
    summary = [
        f"logit({good_w!r}) - logit({bad_w!r}): clean {sweep['clean']:.4f}, corrupted "
        f"{sweep['corrupt']:.4f}",
        f"most restored: layer {layer} position {pos} ({tokens[pos]!r}), "
        f"{float(restored[layer, pos]):.1%} of the gap",
    ]
    return writers, numbers, summary


def _secret(text: str) -> str:
    """'419273' or ' 4 1 9 2 7 3' -> ' 4 1 9 2 7 3', the canaries' spelling."""
    from lmforge.errors import LmforgeError

    digits = text.replace(" ", "")
    if not digits.isdigit() or not digits.isascii() or not 1 <= len(digits) <= 18:
        raise LmforgeError(f"--secret {text!r}: give a string of 1 to 18 digits, e.g. 419273")
    return "".join(f" {c}" for c in digits)


def _probe_sequences(args, model, tokenizer) -> tuple[list[list[int]], str]:
    """Training windows for the extraction probe and where they came from."""
    import numpy as np
    import torch

    from lmforge.data import open_split
    from lmforge.errors import LmforgeError
    from lmforge.text import read_documents

    length = args.probe_prefix + args.probe_suffix
    if args.probes < 0 or args.probe_prefix < 1 or args.probe_suffix < 1:
        raise LmforgeError("--probes must be at least 0, --probe-prefix and --probe-suffix 1")
    if args.probes == 0:
        return [], "none"
    if args.corpus:
        docs = read_documents(args.corpus, args.text_field, args.invalid_utf8)
        tokens = np.concatenate([tokenizer.encode_array(d.text) for d in docs])
        source = " ".join(args.corpus)
    elif (Path(args.model) / "data" / "train.json").is_file():
        tokens, _ = open_split(Path(args.model) / "data", "train")
        source = f"{args.model}/data/train"
    else:
        return [], "none (no data/train in the model directory; pass --corpus)"
    if length > model.config.block_size:
        raise LmforgeError(
            f"--probe-prefix + --probe-suffix = {length} tokens; the model reads at most "
            f"{model.config.block_size}"
        )
    if len(tokens) < length:
        raise LmforgeError(f"the probe's text has {len(tokens)} tokens; a probe needs {length}")
    g = torch.Generator().manual_seed(args.seed)
    starts = torch.randint(0, len(tokens) - length + 1, (args.probes,), generator=g).tolist()
    return [[int(t) for t in tokens[s : s + length]] for s in starts], source


def _memorization(args, model, tokenizer):
    from lmforge.errors import LmforgeError
    from lmforge.interpret import pictures as pic
    from lmforge.interpret.memorization import exposure, verbatim_extraction

    _causal_lm(model, args.model, "memorization")
    secrets = [_secret(s) for s in args.secret]
    if args.samples < 1:
        raise LmforgeError(f"--samples {args.samples}: give at least 1")
    for s in secrets:
        space = 10 ** len(s.split())
        if args.samples >= space:
            raise LmforgeError(
                f"--samples {args.samples}: a {len(s.split())}-digit secret has only "
                f"{space - 1} alternatives"
            )
    if not args.prefix.strip():
        raise LmforgeError("--prefix is empty")
    sequences, source = _probe_sequences(args, model, tokenizer)
    if not secrets and not sequences:
        raise LmforgeError(
            "nothing to measure: give --secret, or training text for the extraction probe "
            f"({source})"
        )
    rows, pile = [], None
    for s in secrets:
        e = exposure(model, tokenizer, s, args.prefix, args.samples, args.seed, return_scores=True)
        scores = e.pop("alternative_log_perplexities")
        pile = scores if pile is None else pile  # the first secret's alternatives
        rows.append(e)
    extraction = (
        verbatim_extraction(model, sequences, args.probe_prefix, args.probe_suffix)
        if sequences
        else None
    )
    writers = []
    if rows:
        # one histogram: the first secret's alternatives, every secret of its length marked
        width = len(rows[0]["secret"].split())
        marks = {
            f"{r['secret'].replace(' ', '')}: {r['exposure']:.1f} bits": r["log_perplexity"]
            for r in rows
            if len(r["secret"].split()) == width
        }
        writers.append(lambda d: pic.exposure_png(pile, marks, d / "exposure.png"))
    numbers = {
        "prefix": args.prefix,
        "samples": args.samples,
        "exposure": [_round(r) for r in rows],
        "extraction": extraction,
        "extraction_source": source,
        "note": "exposure = log2(samples + 1) - log2(rank) is capped at log2(samples + 1) "
        "(max_measurable); exposure_extrapolated fits a normal to the alternatives",
    }
    summary = [
        f"secret{r['secret']}: exposure {r['exposure']:.2f} bits (at most "
        f"{r['max_measurable']:.1f} measurable; extrapolated {r['exposure_extrapolated']:.1f} "
        f"of {r['space_bits']:.1f}), -log p {r['log_perplexity']:.2f} nats"
        for r in rows
    ]
    if extraction:
        summary.append(
            f"extraction: {extraction['extracted']:.1%} of {extraction['sequences']} windows "
            f"reproduce {args.probe_suffix} tokens after {args.probe_prefix} "
            f"({extraction['mean_matched_tokens']:.1f} match on average; {source})"
        )
    return writers, numbers, summary
