"""`lmforge export gguf`: a model directory -> one .gguf file that llama.cpp runs.

The file holds the weights (f32, f16 or q8_0), the metadata llama.cpp's graph reads
(context length, width, heads, KV heads, RoPE base, norm epsilon, ...) and the tokenizer
(byte-level BPE: vocabulary and merges; Unigram: a Llama-style SentencePiece vocabulary with
scores). What goes where is declared in lmforge/models/gguf.py; this module checks the model
against it and writes the file with the `gguf` package, llama.cpp's own writer.

Dtypes: f32 writes every tensor as it is. f16 stores matrices (embeddings included) in
half precision and keeps vectors (norms, biases) in f32, as llama.cpp's converter does.
q8_0 stores each matrix whose rows divide into blocks of 32 as llama.cpp's Q8_0 (per block of
32: one f16 scale and 32 int8), every other tensor in f32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path
from lmforge.models import from_pretrained
from lmforge.models.gguf import (
    ARCHS,
    BPE_PRE,
    CONTROL,
    FILE_TYPES,
    NORMAL,
    TOKENIZER_MODELS,
    UNKNOWN,
    UNUSED,
    GGUFArch,
)
from lmforge.models.hf import config_to_hf
from lmforge.models.io import is_hf_directory, read_model_config
from lmforge.tokenizers import TOKENIZER_FILE, Tokenizer

DTYPES = tuple(FILE_TYPES)
Q8_BLOCK = 32


@dataclass
class GGUFExport:
    path: Path
    arch: str
    dtype: str
    tensors: int
    parameters: int
    tokenizer: str
    bytes: int


def check_output(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.is_dir():
        raise LmforgeError(f"{out} is a directory; give the path of the .gguf file to write")
    if out.exists() and not overwrite:
        raise LmforgeError(f"{out} already exists; pass --overwrite to replace it")
    return out


def arch_for(c: ModelConfig, dtype: str = "f32") -> GGUFArch:
    """llama.cpp's architecture for this model, or an error naming the field that does not
    fit and why."""
    if dtype not in FILE_TYPES:
        raise LmforgeError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if c.arch != "decoder":
        if dtype == "q8_0":
            raise LmforgeError(
                f"q8_0 is a llama.cpp (GGUF) quantization for decoders, and this model is an "
                f"arch={c.arch}; export it with 'lmforge export onnx' (fp32) instead"
            )
        raise LmforgeError(
            f"arch={c.arch}: GGUF export covers the decoders llama.cpp generates with (GPT-2 and "
            "Llama families); use 'lmforge export onnx' for encoders and encoder-decoders"
        )
    reasons = []
    for arch in ARCHS.values():
        try:
            config_to_hf(arch.family, c)
        except LmforgeError as e:
            reasons.append(f"{arch.name}: {str(e).removeprefix(f'a {arch.name} checkpoint ')}")
            continue
        for field, (value, why) in arch.needs.items():
            if getattr(c, field) != value:
                raise LmforgeError(
                    f"{field}={getattr(c, field)!r} cannot be expressed in GGUF ({arch.name}): "
                    f"{why}; it needs {field}={value!r}"
                )
        return arch
    raise LmforgeError(
        "no llama.cpp architecture holds this model exactly (" + "; ".join(reasons) + ")"
    )


def gguf_tensors(model, arch: GGUFArch) -> dict[str, torch.Tensor]:
    """Our weights under llama.cpp's names (the table in models/gguf.py), in fp32."""
    c = model.config
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if c.tie_embeddings:  # llama.cpp falls back to token_embd when output.weight is absent
        state.pop("head.out.weight", None)
    state = {k: v for k, v in state.items() if not k.endswith("sinusoids")}
    tensors, used = arch.weight_map(c).to_theirs(state)
    unused = sorted(set(state) - used)
    if unused:
        raise LmforgeError(f"GGUF ({arch.name}) has no place for {', '.join(unused[:5])}")
    return tensors


def vocabulary(tokenizer: Tokenizer, vocab_size: int) -> dict:
    """The tokenizer.ggml.* arrays: one token per model row (rows the tokenizer does not use
    are padded as UNUSED), their types, and merges (BPE) or scores (Unigram)."""
    kind = TOKENIZER_MODELS.get(tokenizer.algorithm)
    if kind is None:
        raise LmforgeError(
            f"the model's tokenizer is {tokenizer.algorithm!r}, which llama.cpp cannot run: "
            "GGUF holds byte-level BPE or SentencePiece (Unigram) vocabularies"
        )
    if tokenizer.vocab_size > vocab_size:
        raise LmforgeError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model {vocab_size} rows"
        )
    specials = set(tokenizer.special_tokens)
    tokens, types, scores = [], [], []
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i)
        if token is None:
            raise LmforgeError(f"the tokenizer has no token for id {i}; GGUF needs ids 0..n-1")
        tokens.append(token)
        types.append(CONTROL if token in specials else NORMAL)
        scores.append(tokenizer.score(i) if kind == "llama" else 0.0)
    out: dict = {"model": kind}
    if kind == "gpt2":
        pre = BPE_PRE.get(tokenizer.pattern)
        if pre is None:
            raise LmforgeError(
                "the BPE tokenizer's pre-tokenizer regex has no llama.cpp counterpart "
                "(GGUF knows GPT-2's and cl100k's)"
            )
        out["pre"] = pre
        out["merges"] = [f"{a} {b}" for a, b in tokenizer.merges]
        eot = tokenizer.eot_id
        if eot is not None:
            out["bos"] = out["eos"] = eot
    else:
        out["pre"] = "default"
        types[tokenizer.unk_id] = UNKNOWN
        out["unk"] = tokenizer.unk_id
        eot = tokenizer.eot_id
        if eot is not None:
            out["eos"] = eot
    for i in range(tokenizer.vocab_size, vocab_size):
        tokens.append(f"<|lmforge_unused_{i}|>")
        types.append(UNUSED)
        scores.append(-1e9)
    out.update(tokens=tokens, types=types, scores=scores)
    return out


def _array(t: torch.Tensor, dtype: str, name: str):
    """(numpy data, raw GGML type or None) for one tensor under --dtype."""
    import gguf

    data = t.numpy().astype(np.float32)
    if data.ndim < 2 or dtype == "f32":
        return data, None
    if dtype == "f16":
        return data.astype(np.float16), None
    if data.shape[-1] % Q8_BLOCK or name == "position_embd.weight":
        return data, None
    return gguf.quants.quantize(
        data, gguf.GGMLQuantizationType.Q8_0
    ), gguf.GGMLQuantizationType.Q8_0


def _model_config(model_dir: str | Path) -> ModelConfig | None:
    """The config alone where that can be read without the weights (lmforge directories)."""
    if is_hf_directory(model_dir):
        return None
    return read_model_config(model_dir)


def export_gguf(
    model_dir: str | Path, out: str | Path, dtype: str = "f32", overwrite: bool = False
) -> GGUFExport:
    import gguf

    out = check_output(out, overwrite)
    model_dir = Path(model_dir)
    config = _model_config(model_dir)
    if config is not None:  # refuse before reading any weights
        arch_for(config, dtype)
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise LmforgeError(f"{model_dir} has no {TOKENIZER_FILE}; GGUF embeds the tokenizer")
    tokenizer = Tokenizer.load(model_dir)
    model = from_pretrained(model_dir)
    c = model.config
    arch = arch_for(c, dtype)
    vocab = vocabulary(tokenizer, c.vocab_size)
    tensors = gguf_tensors(model, arch)

    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch.name)
        w.add_name(model_dir.resolve().name)
        w.add_file_type(FILE_TYPES[dtype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for m in arch.meta:
            value = getattr(c, m.value)
            key = f"{arch.name}.{m.key}"
            w.add_uint32(key, int(value)) if m.kind == "u32" else w.add_float32(key, float(value))
        w.add_tokenizer_model(vocab["model"])
        w.add_tokenizer_pre(vocab["pre"])
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        if vocab["model"] == "gpt2":
            w.add_token_merges(vocab["merges"])
        else:
            w.add_token_scores(vocab["scores"])
            w.add_unk_token_id(vocab["unk"])
            w.add_add_space_prefix(True)
        for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id)):
            if key in vocab:
                add(vocab[key])
        w.add_add_bos_token(False)  # lmforge's models are trained without a BOS in front
        w.add_add_eos_token(False)
        for name, t in tensors.items():
            data, raw = _array(t, dtype, name)
            w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return GGUFExport(
        out,
        arch.name,
        dtype,
        len(tensors),
        model.num_parameters(),
        tokenizer.algorithm,
        out.stat().st_size,
    )
