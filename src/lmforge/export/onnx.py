"""`lmforge export onnx`: a model directory -> OUT_DIR/model.onnx that ONNX Runtime runs.

Two graphs, both traced from the one Transformer (torch.onnx's dynamo exporter) so ONNX
computes exactly our forward:

decoder with an LM head: one step of incremental decoding (docs/export.md has the table)
    inputs   input_ids (batch, sequence) int64
             attention_mask (batch, past_sequence + sequence) int64, 1 = token, 0 = padding
             position_ids (batch, sequence) int64
             past_key_values.{i}.key / .value (batch, kv_heads, past_sequence, head_dim)
    outputs  logits (batch, sequence, vocab)
             present.{i}.key / .value (batch, kv_heads, past_sequence + sequence, head_dim)
    Prefill passes a past of length 0; each decode step passes the presents back as pasts.

encoders, and decoders with a task head: one forward
    inputs   input_ids, attention_mask (batch, sequence), token_type_ids if the model has
             token types
    outputs  logits (the head's: (batch, labels), (batch, sequence, labels), ...), or for a
             model without a head last_hidden_state (batch, sequence, n_embd) and
             sentence_embedding (batch, n_embd), the mean over real tokens
             (sentence-transformers' pooling, models/heads.py mean_pool)

Every batch and sequence axis is dynamic. OUT_DIR also gets the tokenizer, the config and
export.json (the inputs, outputs, axes and opset).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.fileio import check_new_directory, staged_directory
from lmforge.models import Transformer, from_pretrained, mean_pool
from lmforge.models.io import is_hf_directory, read_model_config
from lmforge.nn import KVCache

OPSET = 18
ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"


class DecoderStep(nn.Module):
    """(input_ids, attention_mask, position_ids, *pasts) -> (logits, *presents)."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.n_layer = model.config.decoder_layers

    def forward(self, input_ids, attention_mask, position_ids, past: list[torch.Tensor]):
        cache = KVCache()
        for i in range(self.n_layer):
            layer = cache.layer(i)
            layer.k, layer.v = past[2 * i], past[2 * i + 1]
        logits = self.model(input_ids, attention_mask, cache=cache, positions=position_ids)
        return (logits, *(t for layer in cache.layers for t in (layer.k, layer.v)))


class Encoder(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> the head's output (+ mean pooling)."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.no_head = model.config.head == "none"

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.model(input_ids, attention_mask, token_type_ids)
        if self.no_head:
            return out, mean_pool(out, attention_mask)
        return out


@dataclass
class OnnxExport:
    directory: Path
    kind: str  # "decoder" or "encoder"
    inputs: list[str]
    outputs: list[str]
    parameters: int
    bytes: int


def check_exportable(c) -> str:
    """'decoder' (incremental graph) or 'encoder' (one forward), or an error naming why."""
    if c.arch == "encoder-decoder":
        raise LmforgeError(
            "arch=encoder-decoder: ONNX export covers decoders (GPT-2, Llama) and encoders "
            "(BERT) with their heads; an encoder-decoder would need two graphs and a "
            "cross-attention cache, not written yet"
        )
    if c.arch == "decoder" and c.head == "lm":
        return "decoder"
    return "encoder"


def signature(model: Transformer, kind: str) -> tuple[list, list, dict, tuple]:
    """(input names, output names, dynamic axes, example inputs) for the graph of `kind`."""
    c = model.config
    batch, seq, past = 2, 3, 4  # example sizes; none may be 0 or 1 (they would be fixed)
    ids = torch.randint(0, c.vocab_size, (batch, seq))
    if kind == "decoder":
        layers = range(c.decoder_layers)
        past_names = [f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value")]
        present_names = [f"present.{i}.{kv}" for i in layers for kv in ("key", "value")]
        inputs = ["input_ids", "attention_mask", "position_ids", *past_names]
        outputs = ["logits", *present_names]
        axes = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: "total_sequence"} for n in present_names},
        }
        kv = torch.randn(batch, c.kv_heads, past, c.head_width)
        example = (
            ids,
            torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).repeat(batch, 1),
            [kv.clone() for _ in past_names],
        )
        return inputs, outputs, axes, example
    inputs = ["input_ids", "attention_mask"]
    example = [ids, torch.ones(batch, seq, dtype=torch.long)]
    if c.type_vocab_size and c.arch == "encoder":
        inputs.append("token_type_ids")
        example.append(torch.zeros(batch, seq, dtype=torch.long))
    per_token = c.head in ("lm", "mlm", "token-classification", "question-answering", "none")
    outputs = ["last_hidden_state", "sentence_embedding"] if c.head == "none" else ["logits"]
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    axes[outputs[0]] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    if c.head == "none":
        axes["sentence_embedding"] = {0: "batch"}
    return inputs, outputs, axes, tuple(example)


def export_onnx(model_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> OnnxExport:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_new_directory(out_dir, overwrite)
    if not is_hf_directory(model_dir):  # refuse before reading any weights
        check_exportable(read_model_config(model_dir))
    model = from_pretrained(model_dir).float().eval()
    kind = check_exportable(model.config)
    wrapper = DecoderStep(model) if kind == "decoder" else Encoder(model)
    inputs, outputs, axes, example = signature(model, kind)
    with staged_directory(out_dir) as staging:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(wrapper, example, staging / ONNX_FILE, inputs, outputs, axes)
        for name in ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, staging / name)
        manifest = {
            "format": "lmforge onnx export",
            "kind": kind,
            "opset": OPSET,
            "inputs": inputs,
            "outputs": outputs,
            "dynamic_axes": axes,
            "n_layer": model.config.decoder_layers if kind == "decoder" else None,
            "kv_heads": model.config.kv_heads,
            "head_dim": model.config.head_width,
        }
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.name.startswith(ONNX_FILE))
    return OnnxExport(out_dir, kind, inputs, outputs, model.num_parameters(), size)


def _export(wrapper, example, path: Path, inputs, outputs, axes) -> None:
    import logging

    for name in ("torch.onnx", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    big = sum(p.numel() for p in wrapper.parameters()) * 4 > 1_500_000_000

    def dynamic(name):
        return {axis: torch.export.Dim.DYNAMIC for axis in axes[name]}

    shapes = [dynamic(n) for n in inputs if not n.startswith("past_key_values")]
    past = [dynamic(n) for n in inputs if n.startswith("past_key_values")]
    if past:
        shapes.append(past)
    try:
        program = torch.onnx.export(
            wrapper,
            example,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=tuple(shapes),
            opset_version=OPSET,
            dynamo=True,
            external_data=big,
            verbose=False,
        )
    except ImportError as e:
        raise LmforgeError(
            f"ONNX export needs the onnx and onnxscript packages ({e}); "
            "pip install 'lmforge[export]'"
        ) from None
    program.save(str(path), external_data=big)
