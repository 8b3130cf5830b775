"""`lmforge export gguf MODEL_DIR OUT.gguf [--dtype f32|f16|q8_0]` and
`lmforge export onnx MODEL_DIR OUT_DIR`: run a model without PyTorch (docs/export.md)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for llama.cpp (GGUF) or ONNX Runtime",
        description="Export a model directory to a format that runs without PyTorch: "
        "'gguf' (llama.cpp; GPT-2 and Llama families, tokenizer embedded) or 'onnx' "
        "(ONNX Runtime; decoders with past key/values for incremental decoding, encoders and "
        "task heads). See docs/export.md.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    g = formats.add_parser(
        "gguf",
        help="one .gguf file for llama.cpp",
        description="Write weights, llama.cpp metadata and the tokenizer to one .gguf file.",
    )
    g.add_argument("model_dir", help="lmforge or Hugging Face model directory")
    g.add_argument("out", help="the .gguf file to write")
    g.add_argument(
        "--dtype",
        choices=["f32", "f16", "q8_0"],
        default="f32",
        help="weight storage: f32 (exact), f16, or q8_0 (8-bit blocks of 32; default: f32)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    g.set_defaults(run=run_gguf)
    o = formats.add_parser(
        "onnx",
        help="OUT_DIR/model.onnx for ONNX Runtime",
        description="Write OUT_DIR/model.onnx (fp32, dynamic batch and sequence axes), the "
        "tokenizer, the config and export.json (inputs, outputs, opset).",
    )
    o.add_argument("model_dir", help="lmforge or Hugging Face model directory")
    o.add_argument("out_dir", help="the directory to write")
    o.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    o.set_defaults(run=run_onnx)


def run_gguf(args, extra) -> int:
    from lmforge.export.gguf import export_gguf

    r = export_gguf(args.model_dir, args.out, args.dtype, args.overwrite)
    print(
        f"{r.parameters:,} parameters, {r.tensors} tensors ({r.arch}, {r.dtype}, "
        f"{r.tokenizer} tokenizer) -> {r.path} ({r.bytes / 1e6:.2f} MB)"
    )
    return 0


def run_onnx(args, extra) -> int:
    from lmforge.export.onnx import export_onnx

    r = export_onnx(args.model_dir, args.out_dir, args.overwrite)
    print(
        f"{r.parameters:,} parameters ({r.kind}) -> {r.directory}/model.onnx "
        f"({r.bytes / 1e6:.2f} MB); inputs {', '.join(r.inputs[:3])}"
        f"{', past_key_values.*' if r.kind == 'decoder' else ''}"
    )
    return 0
