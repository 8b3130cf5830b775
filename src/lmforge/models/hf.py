"""Hugging Face interop: one declarative table per model family, read both ways.

A family's table says
  - `keys`: which config.json key sets which `ModelConfig` field (with Hugging Face's default
    for an absent key, and a translation of values such as activation names). A key with no
    field is a feature lmforge has only in its default form: any other value is refused.
    Several keys may set one field (BART's encoder and decoder head counts); they must agree.
  - `fixed`: the fields the family implies (Llama: RoPE, RMSNorm, gated MLP, ...);
  - `architectures`: the `transformers` class named in config.json -> our head fields;
  - `base` and `heads`: Hugging Face tensor names -> ours, with the transform between them
    (see models/mapping.py). Base-model tensors carry `prefix` inside a model with a head.

`load_hf(dir)` reads config.json + model.safetensors (or shards) into a `Transformer`;
`save_pretrained(model, dir)` writes a directory that `transformers.AutoModel*` loads. Saving
checks that the written config reads back as the model's own, so a model a family cannot
express (GQA in GPT-2, say) is refused with the field that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmforge.config import ModelConfig, build_config
from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, write_json
from lmforge.models.io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    assign_weights,
    name_list,
    read_config_json,
    read_tensors,
    tied_names,
)
from lmforge.models.mapping import (
    ROW,
    SPLIT3,
    TRANSPOSE,
    TRANSPOSE_SPLIT3,
    Rule,
    WeightMap,
    linear,
)
from lmforge.models.transformer import Transformer


@dataclass(frozen=True)
class Key:
    hf: str  # dotted for nested keys: "rope_parameters.rope_theta"
    field: str | None  # the ModelConfig field it sets; None: only `default` is supported
    default: Any  # Hugging Face's value when the key is absent
    values: dict | None = None  # Hugging Face value -> ours, where the names differ
    aliases: tuple[str, ...] = ()  # older spellings, read but not written


@dataclass(frozen=True)
class Family:
    model_type: str
    prefix: str
    architectures: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    keys: tuple[Key, ...]
    base: tuple[Rule, ...]
    heads: dict[str, tuple[Rule, ...]]
    ignore: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # our tensors that may be absent (they keep zeros)


ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# Components every family states, so a table reads on its own.
_COMMON_OFF = {"scale_embeddings": False, "pooler": False, "head_bias": False}


def attention_rules(theirs: str, ours: str, names=("q_proj", "k_proj", "v_proj", "out_proj")):
    return [
        rule
        for name, part in zip(names, ("q", "k", "v", "out"))
        for rule in linear(f"{theirs}.{name}", f"{ours}.{part}")
    ]


# ---------------------------------------------------------------- GPT-2

_G = "decoder.blocks.{i}"
GPT2 = Family(
    model_type="gpt2",
    prefix="transformer.",
    architectures={"GPT2LMHeadModel": {"head": "lm"}, "GPT2Model": {"head": "none"}},
    fixed={
        **_COMMON_OFF,
        "arch": "decoder",
        "positions": "learned",
        "position_offset": 0,
        "norm": "layernorm",
        "norm_position": "pre",
        "embedding_norm": False,
        "type_vocab_size": 0,
        "mlp": "plain",
        "bias": True,
        "n_kv_head": None,
        "head_dim": None,
    },
    keys=(
        Key("vocab_size", "vocab_size", 50257),
        Key("n_positions", "block_size", 1024),
        Key("n_embd", "n_embd", 768),
        Key("n_layer", "n_layer", 12),
        Key("n_head", "n_head", 12),
        Key("n_inner", "mlp_hidden", None),
        Key("activation_function", "activation", "gelu_new", ACTIVATIONS),
        Key("layer_norm_epsilon", "norm_eps", 1e-5),
        Key("resid_pdrop", "dropout", 0.1),
        Key("tie_word_embeddings", "tie_embeddings", True),
        Key("scale_attn_weights", None, True),
        Key("scale_attn_by_inverse_layer_idx", None, False),
        Key("add_cross_attention", None, False),
    ),
    base=(
        Rule("wte.weight", "tok_embed.weight"),
        Rule("wpe.weight", "decoder.pos_embed.weight"),
        *linear("h.{i}.ln_1", f"{_G}.attn_norm"),
        # Conv1D weights are (in, out); c_attn holds W^Q, W^K, W^V side by side.
        *linear(
            "h.{i}.attn.c_attn", tuple(f"{_G}.attn.{x}" for x in "qkv"), TRANSPOSE_SPLIT3, SPLIT3
        ),
        *linear("h.{i}.attn.c_proj", f"{_G}.attn.out", TRANSPOSE),
        *linear("h.{i}.ln_2", f"{_G}.mlp_norm"),
        *linear("h.{i}.mlp.c_fc", f"{_G}.mlp.up", TRANSPOSE),
        *linear("h.{i}.mlp.c_proj", f"{_G}.mlp.down", TRANSPOSE),
        *linear("ln_f", "decoder.final_norm"),
    ),
    heads={"lm": (Rule("lm_head.weight", "head.out.weight"),)},
    ignore=(r"\.attn\.(masked_)?bias$",),  # the causal-mask buffers of old checkpoints
)

# ---------------------------------------------------------------- Llama

_L = "decoder.blocks.{i}"
LLAMA = Family(
    model_type="llama",
    prefix="model.",
    architectures={"LlamaForCausalLM": {"head": "lm"}, "LlamaModel": {"head": "none"}},
    fixed={
        **_COMMON_OFF,
        "arch": "decoder",
        "positions": "rope",
        "position_offset": 0,
        "norm": "rmsnorm",
        "norm_position": "pre",
        "embedding_norm": False,
        "type_vocab_size": 0,
        "mlp": "gated",
    },
    keys=(
        Key("vocab_size", "vocab_size", 32000),
        Key("hidden_size", "n_embd", 4096),
        Key("intermediate_size", "mlp_hidden", 11008),
        Key("num_hidden_layers", "n_layer", 32),
        Key("num_attention_heads", "n_head", 32),
        Key("num_key_value_heads", "n_kv_head", None),
        Key("head_dim", "head_dim", None),
        Key("hidden_act", "activation", "silu", ACTIVATIONS),
        Key("max_position_embeddings", "block_size", 2048),
        Key("rms_norm_eps", "norm_eps", 1e-6),
        Key("rope_parameters.rope_theta", "rope_base", 10000.0, aliases=("rope_theta",)),
        Key(
            "rope_parameters.rope_type",
            None,
            "default",
            aliases=("rope_scaling.rope_type", "rope_scaling.type"),
        ),
        Key("attention_bias", "bias", False),
        Key("mlp_bias", "bias", False),
        Key("attention_dropout", "dropout", 0.0),
        Key("tie_word_embeddings", "tie_embeddings", False),
    ),
    base=(
        Rule("embed_tokens.weight", "tok_embed.weight"),
        Rule("layers.{i}.input_layernorm.weight", f"{_L}.attn_norm.weight"),
        *attention_rules(
            "layers.{i}.self_attn", f"{_L}.attn", ("q_proj", "k_proj", "v_proj", "o_proj")
        ),
        Rule("layers.{i}.post_attention_layernorm.weight", f"{_L}.mlp_norm.weight"),
        *linear("layers.{i}.mlp.gate_proj", f"{_L}.mlp.gate"),
        *linear("layers.{i}.mlp.up_proj", f"{_L}.mlp.up"),
        *linear("layers.{i}.mlp.down_proj", f"{_L}.mlp.down"),
        Rule("norm.weight", "decoder.final_norm.weight"),
    ),
    heads={"lm": (Rule("lm_head.weight", "head.out.weight"),)},
    ignore=(r"rotary_emb\.inv_freq$",),
)

# ---------------------------------------------------------------- BERT

_B = "encoder.blocks.{i}"
_BL = "encoder.layer.{i}"
BERT = Family(
    model_type="bert",
    prefix="bert.",
    architectures={
        "BertModel": {"head": "none", "pooler": True},
        "BertForMaskedLM": {"head": "mlm", "pooler": False},
        "BertForSequenceClassification": {"head": "sequence-classification", "pooler": True},
        "BertForTokenClassification": {"head": "token-classification", "pooler": False},
        "BertForQuestionAnswering": {"head": "question-answering", "pooler": False},
    },
    fixed={
        **_COMMON_OFF,
        "arch": "encoder",
        "positions": "learned",
        "position_offset": 0,
        "norm": "layernorm",
        "norm_position": "post",
        "embedding_norm": True,
        "mlp": "plain",
        "bias": True,
        "n_kv_head": None,
        "head_dim": None,
    },
    keys=(
        Key("vocab_size", "vocab_size", 30522),
        Key("hidden_size", "n_embd", 768),
        Key("num_hidden_layers", "n_layer", 12),
        Key("num_attention_heads", "n_head", 12),
        Key("intermediate_size", "mlp_hidden", 3072),
        Key("hidden_act", "activation", "gelu", ACTIVATIONS),
        Key("hidden_dropout_prob", "dropout", 0.1),
        Key("max_position_embeddings", "block_size", 512),
        Key("type_vocab_size", "type_vocab_size", 2),
        Key("layer_norm_eps", "norm_eps", 1e-12),
        Key("tie_word_embeddings", "tie_embeddings", True),
        Key("position_embedding_type", None, "absolute"),
        Key("is_decoder", None, False),
        Key("add_cross_attention", None, False),
    ),
    base=(
        Rule("embeddings.word_embeddings.weight", "tok_embed.weight"),
        Rule("embeddings.position_embeddings.weight", "encoder.pos_embed.weight"),
        Rule("embeddings.token_type_embeddings.weight", "encoder.type_embed.weight"),
        *linear("embeddings.LayerNorm", "encoder.embed_norm"),
        *attention_rules(
            f"{_BL}.attention",
            f"{_B}.attn",
            ("self.query", "self.key", "self.value", "output.dense"),
        ),
        *linear(f"{_BL}.attention.output.LayerNorm", f"{_B}.attn_norm"),
        *linear(f"{_BL}.intermediate.dense", f"{_B}.mlp.up"),
        *linear(f"{_BL}.output.dense", f"{_B}.mlp.down"),
        *linear(f"{_BL}.output.LayerNorm", f"{_B}.mlp_norm"),
        *linear("pooler.dense", "pooler.dense"),
    ),
    heads={
        "mlm": (
            *linear("cls.predictions.transform.dense", "head.transform"),
            *linear("cls.predictions.transform.LayerNorm", "head.norm"),
            Rule("cls.predictions.decoder.weight", "head.out.weight"),
            Rule("cls.predictions.bias", "head.out.bias"),
        ),
        "sequence-classification": tuple(linear("classifier", "head.out")),
        "token-classification": tuple(linear("classifier", "head.out")),
        "question-answering": tuple(linear("qa_outputs", "head.out")),
    },
    # position_ids: a buffer of arange; decoder.bias: a copy of cls.predictions.bias;
    # pretraining checkpoints also hold the pooler and the next-sentence head, which the
    # masked-LM model has not (transformers drops them too)
    ignore=(
        r"embeddings\.position_ids$",
        r"cls\.predictions\.decoder\.bias$",
        r"pooler\.dense\.(weight|bias)$",
        r"^cls\.seq_relationship\.",
    ),
)

# ---------------------------------------------------------------- BART


def _bart_stack(side: str) -> list[Rule]:
    theirs, ours = f"{side}.layers.{{i}}", f"{side}.blocks.{{i}}"
    return [
        Rule(f"{side}.embed_positions.weight", f"{side}.pos_embed.weight"),
        *linear(f"{side}.layernorm_embedding", f"{side}.embed_norm"),
        *attention_rules(f"{theirs}.self_attn", f"{ours}.attn"),
        *linear(f"{theirs}.self_attn_layer_norm", f"{ours}.attn_norm"),
        *linear(f"{theirs}.fc1", f"{ours}.mlp.up"),
        *linear(f"{theirs}.fc2", f"{ours}.mlp.down"),
        *linear(f"{theirs}.final_layer_norm", f"{ours}.mlp_norm"),
    ]


BART = Family(
    model_type="bart",
    prefix="model.",
    architectures={
        "BartForConditionalGeneration": {"head": "lm", "head_bias": True},
        "BartModel": {"head": "none", "head_bias": False},
    },
    fixed={
        **_COMMON_OFF,
        "arch": "encoder-decoder",
        "positions": "learned",
        "position_offset": 2,  # BART's learned table starts at row 2
        "norm": "layernorm",
        "norm_eps": 1e-5,
        "norm_position": "post",
        "embedding_norm": True,
        "type_vocab_size": 0,
        "mlp": "plain",
        "bias": True,
        "tie_embeddings": True,
        "n_kv_head": None,
        "head_dim": None,
    },
    keys=(
        Key("vocab_size", "vocab_size", 50265),
        Key("d_model", "n_embd", 1024),
        Key("encoder_layers", "n_layer", 12),
        Key("decoder_layers", "n_decoder_layer", 12),
        Key("encoder_attention_heads", "n_head", 16),
        Key("decoder_attention_heads", "n_head", 16),
        Key("encoder_ffn_dim", "mlp_hidden", 4096),
        Key("decoder_ffn_dim", "mlp_hidden", 4096),
        Key("activation_function", "activation", "gelu", ACTIVATIONS),
        Key("max_position_embeddings", "block_size", 1024),
        Key("dropout", "dropout", 0.1),
        Key("scale_embedding", "scale_embeddings", False),
        Key("tie_word_embeddings", None, True),
    ),
    base=(
        Rule("shared.weight", "tok_embed.weight"),
        *_bart_stack("encoder"),
        *_bart_stack("decoder"),
        *attention_rules("decoder.layers.{i}.encoder_attn", "decoder.blocks.{i}.cross"),
        *linear("decoder.layers.{i}.encoder_attn_layer_norm", "decoder.blocks.{i}.cross_norm"),
    ),
    heads={
        "lm": (
            Rule("lm_head.weight", "head.out.weight"),
            Rule("final_logits_bias", "head.out.bias", ROW),
        )
    },
    # embed_tokens: copies of `shared`; version: a fairseq leftover
    ignore=(r"(en|de)coder\.embed_tokens\.weight$", r"(en|de)coder\.version$"),
    optional=("head.out.bias",),  # transformers fills a missing final_logits_bias with zeros
)

FAMILIES = {f.model_type: f for f in (GPT2, LLAMA, BERT, BART)}

# ---------------------------------------------------------------- config.json <-> ModelConfig

_ABSENT = object()


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def family_of(hf: dict, source: str) -> Family:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise LmforgeError(
            f"{source}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def config_from_hf(
    family: Family, hf: dict, source: str = CONFIG_FILE, has_head: bool | None = None
) -> ModelConfig:
    """`has_head` picks the architecture when config.json names none (do the weights carry
    the base-model prefix?)."""
    values: dict[str, Any] = dict(family.fixed)
    set_by: dict[str, str] = {}
    problems = []
    for key in family.keys:
        raw = next(
            (v for v in (_get(hf, k) for k in (key.hf, *key.aliases)) if v is not _ABSENT),
            key.default,
        )
        if key.field is None:
            if raw != key.default:
                problems.append(f"{key.hf}={raw!r} (lmforge supports only {key.default!r})")
            continue
        if key.values is not None and raw not in key.values:
            problems.append(f"{key.hf}={raw!r} (supported: {', '.join(key.values)})")
            continue
        value = key.values[raw] if key.values is not None else raw
        if key.field in set_by and values[key.field] != value:
            first = set_by[key.field]
            problems.append(
                f"{first}={_get(hf, first)!r} but {key.hf}={raw!r} (lmforge needs them equal)"
            )
            continue
        values[key.field], set_by[key.field] = value, key.hf
    names = hf.get("architectures") or []
    base = next(n for n, fields in family.architectures.items() if fields["head"] == "none")
    with_head = next(n for n in family.architectures if n != base)
    architecture = names[0] if names else (with_head if has_head else base)
    if architecture not in family.architectures:
        problems.append(
            f"architecture {architecture} (supported: {', '.join(family.architectures)})"
        )
    else:
        values.update(family.architectures[architecture])
    if isinstance(hf.get("id2label"), dict):
        values["num_labels"] = len(hf["id2label"])
    elif isinstance(hf.get("num_labels"), int):
        values["num_labels"] = hf["num_labels"]
    if problems:
        raise LmforgeError(
            f"{source}: unsupported {family.model_type} config: {'; '.join(problems)}"
        )
    try:
        return build_config({"model": values}).model
    except LmforgeError as e:
        raise LmforgeError(f"{source}: {e}") from None


def config_to_hf(family: Family, config: ModelConfig) -> dict:
    """config.json for `config`, checked to read back as the same model."""
    c = config.resolved()
    problems = []
    architecture = next(
        (
            name
            for name, fields in family.architectures.items()
            if all(getattr(c, k) == v for k, v in fields.items())
        ),
        None,
    )
    if architecture is None:
        problems.append(
            f"head={c.head!r} with pooler={c.pooler}, head_bias={c.head_bias} "
            f"(it has: {', '.join(f'{n} {f}' for n, f in family.architectures.items())})"
        )
    hf: dict[str, Any] = {"model_type": family.model_type, "architectures": [architecture]}
    for key in family.keys:
        value = key.default if key.field is None else getattr(c, key.field)
        if key.values is not None:
            theirs = [name for name, ours in key.values.items() if ours == value]
            if not theirs:
                problems.append(f"{key.field}={value!r}")
                continue
            value = theirs[0]
        _set(hf, key.hf, value)
    hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_labels)}
    hf["label2id"] = {f"LABEL_{i}": i for i in range(c.num_labels)}
    if not problems:
        back = config_from_hf(family, hf).resolved().model_dump()
        ours = c.model_dump()
        problems = [
            f"{name}={ours[name]!r} (it reads back as {back[name]!r})"
            for name in ours
            if name != "attention" and ours[name] != back[name]  # attention: our choice of path
        ]
    if problems:
        raise LmforgeError(f"a {family.model_type} checkpoint cannot hold {'; '.join(problems)}")
    return hf


def detect_family(config: ModelConfig) -> Family:
    """The first family whose config can hold this model exactly."""
    reasons = []
    for family in FAMILIES.values():
        try:
            config_to_hf(family, config)
            return family
        except LmforgeError as e:
            reasons.append(str(e))
    raise LmforgeError(f"no Hugging Face family fits this model: {' | '.join(reasons)}")


# ---------------------------------------------------------------- weights


def weight_map(family: Family, config: ModelConfig, prefixed: bool | None = None) -> WeightMap:
    """The family's rules for this model. Base-model tensors carry the prefix inside a model
    with a head, unless `prefixed` says how a file names them (GPT-2's original checkpoint
    has none under GPT2LMHeadModel)."""
    if prefixed is None:
        prefixed = config.head != "none"
    prefix = family.prefix if prefixed else ""
    rules = [Rule(prefix + r.theirs, r.ours, r.transform) for r in family.base]
    return WeightMap([*rules, *family.heads.get(config.head, ())], family.ignore)


def load_hf(directory: str | Path) -> Transformer:
    """A Transformer from a Hugging Face model directory."""
    hf = read_config_json(directory)
    source = str(Path(directory) / CONFIG_FILE)
    family = family_of(hf, source)
    tensors, _ = read_tensors(directory)
    prefixed = any(name.startswith(family.prefix) for name in tensors)
    model = Transformer(config_from_hf(family, hf, source, prefixed))
    layout = weight_map(family, model.config, prefixed)
    assign_weights(model, tensors, str(directory), layout, family.optional)
    return model


def save_pretrained(model: Transformer, directory: str | Path, family: str | None = None) -> Path:
    """Write config.json and model.safetensors in the layout of `family` (default: the first
    that fits), for `transformers.AutoModel*.from_pretrained`. Tied weights are written once,
    as transformers does."""
    if family is not None and family not in FAMILIES:
        raise LmforgeError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    fam = FAMILIES[family] if family else detect_family(model.config)
    hf = config_to_hf(fam, model.config)
    aliases = tied_names(model)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if not aliases.get(name, set()) & state.keys():
            state[name] = tensor
    tensors, used = weight_map(fam, model.config).to_theirs(state)
    unused = [name for name in state if name not in used]
    if unused:
        raise LmforgeError(f"a {fam.model_type} checkpoint has no place for {name_list(unused)}")
    directory = Path(directory)
    dtype = next(model.parameters()).dtype
    hf["dtype"] = str(dtype).removeprefix("torch.")
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(
            {name: t.detach().contiguous().cpu() for name, t in tensors.items()},
            str(tmp),
            metadata={"format": "pt"},
        )
    write_json(directory / CONFIG_FILE, hf)
    return directory
