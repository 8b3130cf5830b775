"""Typed configs: dataclass-like sections validated by pydantic, YAML presets, dotted overrides.

A run is described by one `Config` with four sections (`model`, `data`, `train`, `run`).
Presets are YAML files in `lmforge/configs/`; any field can be overridden on the command line
as `--section.field=value` (the value is parsed as YAML, so `6`, `true`, `[a, b]` work).
Every mistake becomes an `LmforgeError` naming the key and what is allowed.
"""

from __future__ import annotations

import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmforge.errors import LmforgeError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """Shape and components of the Transformer: one core, configured.

    The defaults are the GPT-2 shape the pretraining presets use. The presets in
    `configs/models/` (gpt2, llama, bert, bart) show which fields make each architecture;
    docs/models.md explains every field. Fields left at null are derived (`resolved()`).
    """

    arch: Literal["decoder", "encoder", "encoder-decoder"] = Field(
        "decoder",
        description="decoder (causal, GPT/Llama), encoder (bidirectional, BERT) or "
        "encoder-decoder (BART)",
    )
    vocab_size: int = Field(0, ge=0, description="vocabulary size; 0 takes it from the tokenizer")
    block_size: int = Field(256, ge=1, description="context length in tokens")
    n_layer: int = Field(6, ge=1, description="Transformer blocks (the encoder's, if two stacks)")
    n_decoder_layer: int | None = Field(
        None, ge=1, description="decoder blocks of an encoder-decoder; null: n_layer"
    )
    n_embd: int = Field(384, ge=1, description="model width")
    head_dim: int | None = Field(None, ge=1, description="width of one head; null: n_embd/n_head")
    n_head: int = Field(6, ge=1, description="attention (query) heads per block")
    n_kv_head: int | None = Field(
        None,
        ge=1,
        description="key/value heads: null or n_head (multi-head), fewer (grouped-query), "
        "1 (multi-query)",
    )
    positions: Literal["learned", "sinusoidal", "rope", "none"] = Field(
        "learned", description="position information: learned table, sinusoids, RoPE, none"
    )
    position_offset: int = Field(0, ge=0, description="first row of the learned table (BART: 2)")
    rope_base: float = Field(10000.0, gt=0, description="RoPE base (theta)")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="normalisation layer")
    norm_eps: float = Field(1e-5, gt=0, description="epsilon of the norms")
    norm_position: Literal["pre", "post"] = Field(
        "pre",
        description="pre: x + f(norm(x)), with a final norm; post: norm(x + f(x)) (BERT, BART)",
    )
    embedding_norm: bool = Field(False, description="normalise the embeddings (BERT, BART)")
    scale_embeddings: bool = Field(
        False, description="multiply token embeddings by sqrt(n_embd) (original Transformer)"
    )
    type_vocab_size: int = Field(0, ge=0, description="token-type (segment) embeddings; 0: none")
    mlp: Literal["plain", "gated"] = Field(
        "plain", description="plain: down(act(up x)); gated: down(act(gate x) * up x)"
    )
    activation: Literal["gelu_tanh", "gelu", "relu", "silu"] = Field(
        "gelu_tanh", description="MLP activation (gated + silu = SwiGLU)"
    )
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width as a multiple of n_embd")
    mlp_hidden: int | None = Field(None, ge=1, description="MLP hidden width; null: mlp_ratio")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")
    bias: bool = Field(True, description="bias terms in linear layers and LayerNorms")
    tie_embeddings: bool = Field(True, description="share the input embedding and output head")
    head: Literal[
        "lm",
        "mlm",
        "sequence-classification",
        "token-classification",
        "question-answering",
        "none",
    ] = Field("lm", description="task head; none returns the final hidden states")
    head_bias: bool = Field(False, description="bias on the LM head (BART's final_logits_bias)")
    num_labels: int = Field(2, ge=1, description="classes of the classification heads")
    pooler: bool = Field(False, description="BERT's pooler: tanh(dense(first token))")
    pooling: Literal["auto", "pooler", "first", "last", "mean"] = Field(
        "auto",
        description="the vector a sequence-classification head reads: auto (the pooler if "
        "there is one, else a decoder's last real token, an encoder's first), pooler, first "
        "([CLS]), last (real token) or mean (of the real tokens, as sentence-transformers)",
    )
    attention: Literal["sdpa", "explicit"] = Field(
        "sdpa",
        description="fused scaled_dot_product_attention, or the explicit softmax(QK^T/sqrt(d))V",
    )

    @field_validator("n_head")
    @classmethod
    def _heads_divide_width(cls, n_head: int, info) -> int:
        n_embd = info.data.get("n_embd")
        if n_embd and info.data.get("head_dim") is None and n_embd % n_head:
            fits = [h for h in range(1, min(n_embd, 32) + 1) if n_embd % h == 0]
            raise ValueError(
                f"n_embd={n_embd} is not divisible by n_head={n_head}; "
                f"pick n_head from {fits}, change n_embd or set head_dim"
            )
        return n_head

    @field_validator("n_kv_head")
    @classmethod
    def _kv_heads_divide_heads(cls, n_kv_head: int | None, info) -> int | None:
        n_head = info.data.get("n_head")
        if n_kv_head and n_head and n_head % n_kv_head:
            fits = [h for h in range(1, n_head + 1) if n_head % h == 0]
            raise ValueError(
                f"n_head={n_head} is not divisible by n_kv_head={n_kv_head}; pick one of {fits}"
            )
        return n_kv_head

    @property
    def sequence_pooling(self) -> str:
        """The vector a sequence-classification head reads, with auto resolved: the pooler's
        if there is one, else a decoder's last real token (it has seen the whole sequence),
        else the first token ([CLS])."""
        if self.pooling != "auto":
            return self.pooling
        return "pooler" if self.pooler else "last" if self.arch == "decoder" else "first"

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_width(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden or self.mlp_ratio * self.n_embd

    @property
    def decoder_layers(self) -> int:
        """Blocks of the decoder stack (0 for an encoder)."""
        if self.arch == "encoder":
            return 0
        if self.arch == "encoder-decoder":
            return self.n_decoder_layer or self.n_layer
        return self.n_layer

    def resolved(self) -> ModelConfig:
        """The same model with every derived (null) size written out."""
        return self.model_copy(
            update={
                "n_kv_head": self.kv_heads,
                "head_dim": self.head_width,
                "mlp_hidden": self.mlp_width,
                "n_decoder_layer": self.decoder_layers if self.arch == "encoder-decoder" else None,
                "pooling": self.sequence_pooling,
            }
        )


class DataConfig(Section):
    """Where the text comes from and how it becomes tokens."""

    corpus: list[str] = Field(
        ["shakespeare"],
        description="'shakespeare' (built in), or .txt/.jsonl files, directories and globs",
    )
    text_field: str = Field("text", description="field holding the text in .jsonl files")
    invalid_utf8: Literal["error", "replace"] = Field(
        "error", description="on bytes that are not UTF-8: stop with an error, or replace them"
    )
    valid_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="share of documents held out (user corpora only)"
    )
    tokenizer: Literal["char", "bpe", "wordpiece", "unigram"] = Field(
        "char", description="tokenizer algorithm, trained on the training split"
    )
    vocab_size: int = Field(
        8192, ge=1, description="tokenizer vocabulary size (subword algorithms; char ignores it)"
    )
    pre_tokenizer: Literal["gpt2", "cl100k"] = Field(
        "gpt2", description="byte-level BPE's regex: GPT-2's, or GPT-4's cl100k"
    )
    clean: str | None = Field(
        None,
        description="cleaning recipe run on the training split before tokenization "
        "('default', 'web' or a YAML file; see docs/data.md); its report goes in the run",
    )

    @field_validator("corpus", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("corpus")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one corpus: 'shakespeare' or a file, directory or glob")
        return value


class TrainConfig(Section):
    """The optimisation loop."""

    max_steps: int = Field(2000, ge=1, description="optimizer steps; the LR schedule spans them")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="time budget: the LR schedule decays by the deadline, then training stops",
    )
    batch_size: int = Field(16, ge=1, description="sequences per micro-batch")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    batch_tokens: int | None = Field(
        None,
        ge=1,
        description="pretraining: tokens per optimizer step over all processes; sets "
        "grad_accum_steps to batch_tokens / (batch_size x block_size x data-parallel ranks)",
    )
    optimizer: Literal["adamw", "adam", "adadelta", "rmsprop", "sgd"] = Field(
        "adamw", description="torch.optim optimizer (fused or foreach kernels where they exist)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate")
    schedule: Literal["cosine", "linear", "constant", "noam"] = Field(
        "cosine",
        description="after linear warmup: cosine or linear decay to min_lr_ratio, constant, "
        "or noam (the 2017 Transformer's inverse square root)",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a share of the peak")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps before the decay")
    weight_decay: float = Field(
        0.1, ge=0, description="weight decay of matrices (decoupled for AdamW, L2 otherwise)"
    )
    min_steps: int = Field(
        0,
        ge=0,
        description="fine-tuning: at least this many optimisation steps when max_steps "
        "follows the epochs (a tiny training set makes few steps per epoch)",
    )
    head_from_probe: bool = Field(
        False,
        description="fine-tuning a classifier: start the new head from the logistic-"
        "regression probe fitted on the frozen base (linear probing, then fine-tuning) "
        "instead of random weights",
    )
    head_lr_scale: float = Field(
        1.0,
        gt=0,
        description="the task head's learning rate as a multiple of learning_rate (a new, "
        "randomly initialised head on a pretrained body; fine-tuning sets 10 where the "
        "minimum steps stretch a small set's run, docs/LOG.md entry 20)",
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam/AdamW beta1")
    beta2: float = Field(0.99, ge=0, lt=1, description="Adam/AdamW beta2")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD and RMSprop momentum")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm; 0 disables")
    eval_interval: int = Field(250, ge=1, description="evaluate every N steps")
    eval_batches: int = Field(20, ge=1, description="batches per periodic evaluation")
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="stop after this many evaluations without a better validation metric "
        "(pretraining: loss), keeping the best weights in best.safetensors; 0: no early stop",
    )
    log_interval: int = Field(10, ge=1, description="write a metrics line every N steps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 autocast where the hardware has fast bf16 (auto), or force one"
    )
    compile: bool = Field(False, description="wrap the model in torch.compile")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where to train")
    parallel: Literal["none", "ddp", "fsdp", "tp", "fsdp+tp"] = Field(
        "none",
        description="under torchrun: ddp (data parallel), fsdp (sharded), tp (tensor parallel), "
        "fsdp+tp (a 2-D mesh: TP within groups of tp_size, FSDP across them); none uses ddp "
        "there; batch_size is per data-parallel rank",
    )
    tp_size: int | None = Field(
        None, ge=1, description="fsdp+tp: ranks per tensor-parallel group; null: one node's"
    )
    seed: int = Field(1337, description="seed for weights, data order and dropout")
    activation_checkpointing: bool = Field(
        False,
        description="recompute each block's activations in the backward pass: far less "
        "activation memory for about a third more compute",
    )
    tensorboard: bool = Field(
        False, description="also write the metrics as TensorBoard events to RUN_DIR/tensorboard/"
    )


class RunConfig(Section):
    """Where results go and what to show at the end."""

    name: str = Field("default", min_length=1, description="run directory name under out_dir")
    out_dir: str = Field("runs", description="parent directory of run directories")
    overwrite: bool = Field(False, description="replace an existing run directory")
    sample_prompt: str = Field("\n", description="prompt for the sample written at the end")
    sample_tokens: int = Field(300, ge=0, description="tokens to generate for the final sample")
    eval_sample_tokens: int = Field(
        64, ge=0, description="a language model's sample at each periodic evaluation; 0: none"
    )
    sample_temperature: float = Field(0.8, gt=0, description="sampling temperature")
    sample_top_k: int = Field(50, ge=0, description="keep the k most likely tokens; 0 keeps all")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or value in {".", ".."}:
            raise ValueError("use a plain directory name (no '/'); set run.out_dir for the parent")
        return value


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


# ---------------------------------------------------------------- presets and overrides


def preset_names() -> list[str]:
    folder = resources.files("lmforge") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> dict:
    path = Path(source)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise LmforgeError(f"config file not found: {source}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LmforgeError(
                f"{source}: not UTF-8 text (byte {e.start}); save the config as UTF-8 YAML"
            ) from None
        if not text.strip():  # a truncated download or a mistaken path, not "all defaults"
            raise LmforgeError(
                f"{source} is empty; give a YAML config with sections (model:, train:, ...) "
                "or a preset name"
            )
    elif source in preset_names():
        text = (resources.files("lmforge") / "configs" / f"{source}.yaml").read_text("utf-8")
    else:
        raise LmforgeError(
            f"unknown preset '{source}'; choose one of {', '.join(preset_names())} "
            "or give the path of a .yaml file"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LmforgeError(
            f"{source}: not valid YAML ({e.__class__.__name__}); fix the file"
        ) from e
    if data is None:  # comments only
        raise LmforgeError(
            f"{source} is empty (comments only); give sections (model:, train:, ...) or a "
            "preset name"
        )
    if not isinstance(data, dict):
        raise LmforgeError(
            f"{source}: a config must be a mapping of sections (model:, train:, ...), not a "
            f"{type(data).__name__}; fix the file"
        )
    return data


def _field_type(key: str) -> Any:
    """The annotation of a dotted config key, or None for keys that do not exist."""
    section, _, name = key.partition(".")
    owner = Config.model_fields.get(section)
    field = owner.annotation.model_fields.get(name) if owner else None  # type: ignore[union-attr]
    return field.annotation if field else None


def _parse_value(key: str, raw: str) -> Any:
    """A command-line string for `key`: YAML for list and mapping fields, None for 'null' where
    the field allows it, otherwise the string itself, which validation coerces to the field's
    type ('6' -> 6, 'true' -> True). So '[Enter HAMLET]' stays a prompt, not a list."""
    kind = _field_type(key)
    origins = {typing.get_origin(kind), kind}
    if origins & {list, dict}:
        try:
            return yaml.safe_load(raw) if raw.lstrip().startswith(("[", "{")) else raw
        except yaml.YAMLError:
            raise LmforgeError(f"cannot parse {key}={raw!r} as a YAML list or mapping") from None
    allows_none = type(None) in typing.get_args(kind)
    return None if allows_none and raw.strip().lower() in {"null", "none", "~"} else raw


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """['--model.n_layer=6', '--train.seed', '3'] -> {'model.n_layer': '6', 'train.seed': '3'}"""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise LmforgeError(
                f"unexpected argument '{arg}'; config overrides look like --section.key=value "
                "(e.g. --model.n_layer=6)"
            )
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, raw = arg[2:], args[i + 1]
            i += 1
        else:
            raise LmforgeError(f"override '{arg}' has no value; write {arg}=VALUE")
        out[key] = _parse_value(key, raw)
        i += 1
    return out


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise LmforgeError(f"cannot set '{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _explain(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, naming the dotted key and what would be valid."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            owner: type[BaseModel] = model
            for part in err["loc"][:-1]:
                owner = owner.model_fields[part].annotation  # type: ignore[assignment]
            valid = list(owner.model_fields)
            guess = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            lines.append(f"unknown config key '{loc}'{hint}; valid keys: {', '.join(valid)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            where = f"config key '{loc}'" if loc else "config"
            shown = f" = {err['input']!r}" if loc and not isinstance(err["input"], dict) else ""
            lines.append(f"bad value for {where}{shown}: {msg}")
    return "; ".join(lines)


def build_config(data: dict, overrides: dict[str, Any] | None = None) -> Config:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise LmforgeError(_explain(e, Config)) from None


def load_config(source: str, overrides: dict[str, Any] | None = None) -> Config:
    """Read a preset name or YAML path, apply dotted overrides, validate."""
    return build_config(_read_yaml(source), overrides)


def model_preset_names() -> list[str]:
    """Architecture presets: configs/models/NAME.yaml, each a `model:` section."""
    folder = resources.files("lmforge") / "configs" / "models"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_model_preset(source: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The model section of an architecture preset (gpt2, llama, bert, bart) or of a YAML
    file; `overrides` are model fields, e.g. {"n_layer": 2}."""
    if source in model_preset_names():
        path = resources.files("lmforge") / "configs" / "models" / f"{source}.yaml"
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    elif Path(source).suffix in {".yaml", ".yml"} or Path(source).is_file():
        data = _read_yaml(source)
    else:
        raise LmforgeError(
            f"unknown model preset '{source}'; choose one of {', '.join(model_preset_names())} "
            "or give the path of a .yaml file"
        )
    prefixed = {f"model.{k}": v for k, v in (overrides or {}).items()}
    return build_config({"model": data.get("model") or {}}, prefixed).model


def describe_fields() -> str:
    """Help text for every overridable key, generated from the field definitions."""
    lines = []
    for section, field in Config.model_fields.items():
        cls = field.annotation
        for name, f in cls.model_fields.items():  # type: ignore[union-attr]
            key = f"--{section}.{name}"
            lines.append(f"  {key:<26} {f.description or ''} (default: {f.default!r})")
    return "\n".join(lines)
