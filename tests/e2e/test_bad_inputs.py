"""One matrix of bad input over every command, through the real CLI in a subprocess.

Each case is a command line and the files it needs, made in a folder of its own (the working
directory of the command, so default outputs land there too). Every case must end with exit
status 2, exactly one line on stderr that starts `lmforge: error:` and names what was wrong
(the pattern), no traceback, and the folder exactly as it was: the same files with the same
bytes (nothing created, changed or half-written). New commands add their rows here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.infer.model_dirs import char_model_dir

TEXT = "To be, or not to be, that is the question.\n" * 30


# ---------------------------------------------------------------- what a case can ask for


def model(d: Path) -> None:
    """A working character model in d/m (its tokenizer too)."""
    shutil.copytree(MODEL, d / "m")


def broken(change):
    def make(d: Path) -> None:
        model(d)
        change(d / "m")

    return make


def no_config(m: Path) -> None:
    (m / "config.json").unlink()


def contradicting_config(m: Path) -> None:
    config = json.loads((m / "config.json").read_text())
    config["model"]["n_layer"] = 2
    (m / "config.json").write_text(json.dumps(config))


def truncated_weights(m: Path) -> None:
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])


def weights(content: bytes):
    def change(m: Path) -> None:
        (m / "model.safetensors").write_bytes(content)

    return change


def misnamed_weights(m: Path) -> None:
    tensors = load_file(m / "model.safetensors")
    save_file({f"x.{k}": v for k, v in tensors.items()}, m / "model.safetensors")


def tokenizer_file(content: bytes):
    def change(m: Path) -> None:
        (m / "tokenizer.json").write_bytes(content)

    return change


def existing_run(d: Path) -> None:
    """runs/tiny holds an earlier run (its config)."""
    (d / "runs" / "tiny").mkdir(parents=True)
    (d / "runs" / "tiny" / "config.json").write_text("{}")


def foreign_run(d: Path) -> None:
    (d / "runs" / "tiny").mkdir(parents=True)
    (d / "runs" / "tiny" / "notes.txt").write_text("my notes")


def existing_output(d: Path) -> None:
    (d / "out").mkdir()
    (d / "out" / "keep.txt").write_text("mine")


def records(name: str, lines: list[str]):
    def make(d: Path) -> None:
        (d / name).write_text("".join(line + "\n" for line in lines), "utf-8")

    return make


GOOD = [json.dumps({"text": f"the {w} day", "label": lab}) for w, lab in [("fine", "pos")] * 4]
GOOD += [json.dumps({"text": "the vile day", "label": "neg"})] * 4


CHAT_USER = {"role": "user", "content": "who says hello?"}
CHAT = json.dumps({"messages": [CHAT_USER, {"role": "assistant", "content": "ROMEO"}]})


def _other_adapter() -> bytes:
    """A LoRA adapter file for a module the test model does not have."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.safetensors"
        key = "base_model.model.model.layers.0.self_attn.q_proj"
        save_file(
            {f"{key}.lora_A.weight": torch.zeros(2, 8), f"{key}.lora_B.weight": torch.zeros(8, 2)},
            path,
        )
        return path.read_bytes()


SAFETENSORS_OTHER = _other_adapter()


def model_fields(**fields):
    """Change fields of the model's config.json (the weights stay as they are)."""

    def change(m: Path) -> None:
        config = json.loads((m / "config.json").read_text())
        config["model"].update(fields)
        (m / "config.json").write_text(json.dumps(config))

    return change


@dataclass
class Case:
    id: str
    argv: list[str]
    pattern: str  # what the one error line must say (a regex, case-insensitive)
    files: dict[str, bytes | str] = field(default_factory=dict)
    setup: list = field(default_factory=list)


TINY = ["--train.max_steps=2", "--model.n_layer=1", "--model.block_size=16"]
CORPUS = ["--data.corpus=corpus.txt", *TINY]
FT = ["--model", "m", "--output", "out"]

CASES = [
    # ---- pretrain: preset files
    Case(
        "pretrain-empty-yaml", ["pretrain", "empty.yaml"], r"empty\.yaml.*empty", {"empty.yaml": ""}
    ),
    Case(
        "pretrain-blank-yaml",
        ["pretrain", "blank.yaml"],
        r"blank\.yaml.*empty",
        {"blank.yaml": " \n\t\n"},
    ),
    Case(
        "pretrain-list-yaml",
        ["pretrain", "list.yaml"],
        r"list\.yaml.*mapping",
        {"list.yaml": "- a\n- b\n"},
    ),
    Case(
        "pretrain-bad-yaml", ["pretrain", "bad.yaml"], r"bad\.yaml", {"bad.yaml": "model: [1, 2\n"}
    ),
    Case(
        "pretrain-binary-yaml",
        ["pretrain", "bin.yaml"],
        r"bin\.yaml.*UTF-8",
        {"bin.yaml": b"\xff\xfe\x00m"},
    ),
    Case("pretrain-unknown-preset", ["pretrain", "gpt5"], r"unknown preset 'gpt5'|gpt5"),
    Case(
        "pretrain-unknown-section-yaml",
        ["pretrain", "x.yaml"],
        r"optimiser",
        {"x.yaml": "optimiser:\n  lr: 1\n"},
    ),
    # ---- pretrain: keys and values
    Case(
        "pretrain-unknown-key",
        ["pretrain", "shakespeare-char", "--train.nonsense=1"],
        r"train\.nonsense",
    ),
    Case(
        "pretrain-bad-value",
        ["pretrain", "shakespeare-char", "--train.learning_rate=abc"],
        r"train\.learning_rate",
    ),
    Case(
        "pretrain-negative-layers",
        ["pretrain", "shakespeare-char", "--model.n_layer=-1"],
        r"model\.n_layer",
    ),
    Case(
        "pretrain-zero-batch",
        ["pretrain", "shakespeare-char", "--train.batch_size=0"],
        r"train\.batch_size",
    ),
    Case(
        "pretrain-bad-precision",
        ["pretrain", "shakespeare-char", "--train.precision=fp8"],
        r"train\.precision",
    ),
    Case(
        "pretrain-not-an-override",
        ["pretrain", "shakespeare-char", "--steps", "3"],
        r"--steps|override",
    ),
    # ---- pretrain: corpora
    Case(
        "pretrain-missing-corpus",
        ["pretrain", "shakespeare-char", "--data.corpus=nothere.txt", *TINY],
        r"nothere\.txt",
    ),
    Case(
        "pretrain-empty-corpus",
        ["pretrain", "shakespeare-char", *CORPUS],
        r"corpus\.txt",
        {"corpus.txt": ""},
    ),
    Case(
        "pretrain-binary-corpus",
        ["pretrain", "shakespeare-char", *CORPUS],
        r"corpus\.txt.*(UTF-8|utf-8)",
        {"corpus.txt": b"ok \xff\xfe text" * 50},
    ),
    Case(
        "pretrain-bad-jsonl-corpus",
        ["pretrain", "shakespeare-char", "--data.corpus=c.jsonl", *TINY],
        r"c\.jsonl",
        {"c.jsonl": '{"text": "a"}\n{oops\n'},
    ),
    Case(
        "pretrain-jsonl-without-field",
        ["pretrain", "shakespeare-char", "--data.corpus=c.jsonl", *TINY],
        r"c\.jsonl.*text",
        {"c.jsonl": '{"body": "a b c"}\n'},
    ),
    Case(
        "pretrain-context-too-long",
        [
            "pretrain",
            "shakespeare-char",
            "--data.corpus=corpus.txt",
            "--model.block_size=100000",
            "--train.max_steps=1",
        ],
        r"block_size",
        {"corpus.txt": TEXT},
    ),
    # ---- pretrain: run directories
    Case(
        "pretrain-existing-run",
        ["pretrain", "shakespeare-char", "--run.name=tiny", *CORPUS],
        r"already exists.*(--resume|overwrite)",
        {"corpus.txt": TEXT},
        [existing_run],
    ),
    Case(
        "pretrain-resume-missing",
        ["pretrain", "shakespeare-char", "--run.name=tiny", "--resume"],
        r"(no run|nothing) to resume",
    ),
    Case(
        "pretrain-resume-foreign",
        ["pretrain", "shakespeare-char", "--run.name=tiny", "--resume"],
        r"(no run|nothing) to resume|config\.json",
        setup=[foreign_run],
    ),
    Case(
        "pretrain-overwrite-foreign",
        ["pretrain", "shakespeare-char", "--run.name=tiny", "--run.overwrite=true", *CORPUS],
        r"not an lmforge run",
        {"corpus.txt": TEXT},
        [foreign_run],
    ),
    # ---- serve (bad requests to a running server: tests/serve/test_bad_input.py)
    Case("serve-missing-dir", ["serve", "nothere"], r"nothere"),
    Case("serve-no-slots", ["serve", "m", "--max-batch", "0"], r"--max-batch", setup=[model]),
    Case("serve-bad-port", ["serve", "m", "--port", "70000"], r"--port", setup=[model]),
    Case(
        "serve-truncated-weights",
        ["serve", "m", "--port", "0"],
        r"model\.safetensors",
        setup=[broken(truncated_weights)],
    ),
    # ---- model directories, through generate
    Case("generate-missing-dir", ["generate", "nothere", "--prompt", "a"], r"nothere"),
    Case(
        "generate-no-config",
        ["generate", "m", "--prompt", "a"],
        r"config\.json",
        setup=[broken(no_config)],
    ),
    Case(
        "generate-config-contradicts-weights",
        ["generate", "m", "--prompt", "a"],
        r"model\.safetensors|blocks\.1",
        setup=[broken(contradicting_config)],
    ),
    Case(
        "generate-truncated-weights",
        ["generate", "m", "--prompt", "a"],
        r"model\.safetensors",
        setup=[broken(truncated_weights)],
    ),
    Case(
        "generate-zero-byte-weights",
        ["generate", "m", "--prompt", "a"],
        r"model\.safetensors",
        setup=[broken(weights(b""))],
    ),
    Case(
        "generate-text-weights",
        ["generate", "m", "--prompt", "a"],
        r"model\.safetensors",
        setup=[broken(weights(b"hello, I am not safetensors" * 4))],
    ),
    Case(
        "generate-misnamed-weights",
        ["generate", "m", "--prompt", "a"],
        r"missing|unexpected",
        setup=[broken(misnamed_weights)],
    ),
    Case(
        "generate-garbage-tokenizer",
        ["generate", "m", "--prompt", "a"],
        r"tokenizer\.json",
        setup=[broken(tokenizer_file(b"{not json"))],
    ),
    Case(
        "generate-foreign-tokenizer",
        ["generate", "m", "--prompt", "a"],
        r"tokenizer\.json",
        setup=[broken(tokenizer_file(b'{"hello": 1}'))],
    ),
    Case(
        "generate-empty-tokenizer",
        ["generate", "m", "--prompt", "a"],
        r"tokenizer\.json",
        setup=[broken(tokenizer_file(b""))],
    ),
    Case(
        "generate-negative-tokens",
        ["generate", "m", "--prompt", "a", "--max-new-tokens", "-1"],
        r"max.new.tokens",
        setup=[model],
    ),
    Case(
        "generate-bad-top-p",
        ["generate", "m", "--prompt", "a", "--top-p", "1.5"],
        r"top.p",
        setup=[model],
    ),
    Case(
        "generate-prompt-beyond-context",
        ["generate", "m", "--prompt", "to be " * 10],
        r"prompt has \d+ tokens.*context is 16",
        setup=[model],
    ),
    Case(
        "generate-unknown-flag",
        ["generate", "m", "--temprature", "1"],
        r"unrecognized arguments: --temprature",
        setup=[model],
    ),
    Case("chat-missing-dir", ["chat", "nothere"], r"nothere"),
    Case(
        "bench-generate-zero-batch",
        ["bench-generate", "m", "--batch", "0"],
        r"batch",
        setup=[model],
    ),
    Case(
        "bench-generate-beyond-context",
        ["bench-generate", "m", "--prompt-tokens", "100"],
        r"context of 16",
        setup=[model],
    ),
    # ---- evaluate
    Case("evaluate-missing-run", ["evaluate", "nothere"], r"nothere"),
    Case(
        "evaluate-task-without-head",
        ["evaluate", "classification", "--model", "m", "--data", "t.jsonl"],
        r"fine-tune|head",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    # ---- finetune: records and outputs
    Case(
        "finetune-missing-train",
        ["finetune", "classification", *FT, "--train", "nothere.jsonl"],
        r"nothere\.jsonl",
        setup=[model],
    ),
    Case(
        "finetune-empty-train",
        ["finetune", "classification", *FT, "--train", "t.jsonl"],
        r"t\.jsonl",
        {"t.jsonl": ""},
        [model],
    ),
    Case(
        "finetune-bad-json-line",
        ["finetune", "classification", *FT, "--train", "t.jsonl"],
        r"t\.jsonl.*line",
        setup=[model, records("t.jsonl", [*GOOD, "{oops"])],
    ),
    Case(
        "finetune-missing-field",
        ["finetune", "classification", *FT, "--train", "t.jsonl"],
        r"t\.jsonl.*label",
        setup=[model, records("t.jsonl", [json.dumps({"text": "a"})] * 4)],
    ),
    Case(
        "finetune-binary-csv",
        ["finetune", "classification", *FT, "--train", "t.csv"],
        r"t\.csv",
        {"t.csv": b"text,label\n\xff\xfe,pos\n"},
        [model],
    ),
    Case(
        "finetune-unknown-task",
        ["finetune", "poetry", *FT, "--train", "t.jsonl"],
        r"invalid choice: 'poetry'",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    Case(
        "finetune-existing-output",
        ["finetune", "classification", *FT, "--train", "t.jsonl"],
        r"out.*already exists",
        setup=[model, records("t.jsonl", GOOD), existing_output],
    ),
    Case(
        "finetune-resume-missing",
        ["finetune", "classification", *FT, "--train", "t.jsonl", "--resume"],
        r"nothing to resume",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    Case(
        "finetune-zero-batch",
        ["finetune", "classification", *FT, "--train", "t.jsonl", "--train.batch_size=0"],
        r"train\.batch_size",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    Case(
        "finetune-model-key",
        ["finetune", "classification", *FT, "--train", "t.jsonl", "--model.n_layer=2"],
        r"model\.dropout only, not model\.n_layer",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    # ---- corpus
    Case("corpus-stats-missing", ["corpus", "stats", "nothere.txt"], r"nothere\.txt"),
    Case(
        "corpus-export-existing",
        ["corpus", "export", "corpus.txt", "--output", "out"],
        r"out",
        {"corpus.txt": TEXT},
        [existing_output],
    ),
    # ---- tokenizer
    Case(
        "tokenizer-train-zero-vocab",
        [
            "tokenizer",
            "train",
            "corpus.txt",
            "--algorithm",
            "bpe",
            "--vocab-size",
            "0",
            "--output",
            "tok",
        ],
        r"vocab.size",
        {"corpus.txt": TEXT},
    ),
    Case(
        "tokenizer-train-empty-corpus",
        ["tokenizer", "train", "corpus.txt", "--output", "tok"],
        r"corpus\.txt",
        {"corpus.txt": ""},
    ),
    Case(
        "tokenizer-encode-garbage",
        ["tokenizer", "encode", "m", "hello"],
        r"tokenizer\.json",
        setup=[broken(tokenizer_file(b"\x00\x01garbage"))],
    ),
    Case(
        "tokenizer-encode-vocab-txt-garbage",
        ["tokenizer", "encode", "v", "hello"],
        r"vocab\.txt|tokenizer",
        {"v/vocab.txt": b"\xff\xfe\xfa"},
    ),
    # ---- model
    Case("model-summary-unknown", ["model", "summary", "gpt5"], r"gpt5"),
    Case("model-embed-missing", ["model", "embed", "nothere", "a b"], r"nothere"),
    # ---- convert
    Case(
        "convert-existing-output",
        ["convert", "--to", "hf", "m", "out"],
        r"out.*(exists|--overwrite)",
        setup=[model, existing_output],
    ),
    Case(
        "convert-from-hf-without-config",
        ["convert", "--from", "hf", "m", "out2"],
        r"config\.json|model_type",
        setup=[broken(no_config)],
    ),
    Case(
        "finetune-folds-above-smallest-class",
        ["finetune", "classification", *FT, "--train", "t.jsonl", "--folds", "5"],
        r"--folds 5 is larger than the smallest class",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    Case(
        "finetune-group-by-missing-field",
        [
            "finetune",
            "classification",
            *FT,
            "--train",
            "t.jsonl",
            "--folds",
            "2",
            "--group-by",
            "play",
        ],
        r"no field 'play'",
        setup=[model, records("t.jsonl", GOOD)],
    ),  # fmt: skip
    # ---- LoRA
    Case(
        "finetune-lora-unknown-target",
        [
            "finetune",
            "classification",
            *FT,
            "--train",
            "t.jsonl",
            "--method",
            "lora",
            "--lora.targets=q,gate",
        ],
        r"no layer of this model is named gate; its targets are q, k, v, out",
        setup=[model, records("t.jsonl", GOOD)],
    ),  # fmt: skip
    Case(
        "finetune-lora-rank-too-big",
        [
            "finetune",
            "classification",
            *FT,
            "--train",
            "t.jsonl",
            "--method",
            "lora",
            "--lora.rank=999",
        ],
        r"rank 999 is larger than layer",
        setup=[model, records("t.jsonl", GOOD)],
    ),  # fmt: skip
    Case(
        "finetune-lora-settings-without-lora",
        ["finetune", "classification", *FT, "--train", "t.jsonl", "--lora.rank=4"],
        r"need --method lora",
        setup=[model, records("t.jsonl", GOOD)],
    ),
    Case(
        "lora-merge-not-an-adapter",
        ["lora", "merge", "m", "m", "out2"],
        r"not a PEFT adapter directory",
        setup=[model],
    ),
    Case(
        "lora-merge-adapter-of-another-base",
        ["lora", "merge", "m", "adapter", "out2"],
        r"different base model",
        {
            "adapter/adapter_config.json": '{"peft_type": "LORA", "lora_alpha": 8}',
            "adapter/adapter_model.safetensors": SAFETENSORS_OTHER,
        },
        [model],
    ),
    Case(
        "lora-merge-existing-output",
        ["lora", "merge", "m", "adapter", "out"],
        r"out.*--overwrite",
        setup=[model, existing_output],
    ),
    # ---- embeddings
    Case(
        "embeddings-train-empty",
        ["embeddings", "train", "corpus.txt", "--output", "vec"],
        r"corpus\.txt|no (words|sentences)",
        {"corpus.txt": ""},
    ),
    Case("embeddings-query-missing", ["embeddings", "query", "nothere", "king"], r"nothere"),
    Case(
        "embeddings-query-garbage-w2v",
        ["embeddings", "query", "v.txt", "king"],
        r"v\.txt",
        {"v.txt": "3 4\nking 1 2\n"},
    ),
    Case(
        "embeddings-query-garbage-bin",
        ["embeddings", "query", "v.bin", "king"],
        r"v\.bin",
        {"v.bin": b"2 8\nking \x00\x01"},
    ),
    # ---- data
    Case(
        "data-clean-empty",
        ["data", "clean", "in.jsonl", "--output", "out"],
        r"holds no documents",
        {"in.jsonl": ""},
    ),
    Case(
        "data-clean-malformed-jsonl",
        ["data", "clean", "in.jsonl", "--output", "out", "--workers", "1"],
        r"in\.jsonl:2: not valid JSON",
        {"in.jsonl": '{"text": "fine"}\n{"text": oops}\n'},
    ),
    Case(
        "data-clean-not-utf8",
        ["data", "clean", "in.txt", "--output", "out", "--workers", "1"],
        r"in\.txt: invalid UTF-8 at byte 3.*--invalid-utf8 replace",
        {"in.txt": b"caf\xe9 au lait"},
    ),
    Case(
        "data-clean-huge-line",
        ["data", "clean", "in.jsonl", "--output", "out", "--workers", "1", "--max-doc-mb", "1"],
        r"in\.jsonl:1: a document over 1 MiB.*--max-doc-mb",
        {"in.jsonl": '{"text": "' + "a" * (1 << 21) + '"}\n'},
    ),
    Case(
        "data-clean-unknown-recipe",
        ["data", "clean", "in.txt", "--output", "out", "--recipe", "nope"],
        r"unknown recipe 'nope'.*default",
        {"in.txt": "some text"},
    ),
    Case(
        "data-clean-recipe-bad-step",
        ["data", "clean", "in.txt", "--output", "out", "--recipe", "r.yaml"],
        r"unknown cleaning step 'shuffle'",
        {"in.txt": "some text", "r.yaml": "steps:\n  - shuffle: {}\n"},
    ),
    Case(
        "data-decontaminate-missing-eval",
        ["data", "decontaminate", "in.txt", "--eval", "test.jsonl", "--output", "out"],
        r"test\.jsonl",
        {"in.txt": "some text"},
    ),
    Case(
        "data-clean-existing-output",
        ["data", "clean", "in.txt", "--output", "out"],
        r"out.*--overwrite",
        {"in.txt": "some text"},
        [existing_output],
    ),
    # ---- explain
    Case(
        "explain-missing-model",
        ["explain", "attention", "nothere", "--text", "To be", "--output", "out"],
        r"nothere",
    ),
    Case(
        "explain-empty-text",
        ["explain", "lens", "m", "--text", "  ", "--output", "out"],
        r"--text is empty",
        setup=[model],
    ),
    Case(
        "explain-layer-out-of-range",
        ["explain", "attention", "m", "--text", "To be", "--output", "out", "--layer", "3"],
        r"--layer 3: the model has layers 0 to 0",
        setup=[model],
    ),
    Case(
        "explain-patch-different-lengths",
        ["explain", "patch", "m", "--text", "To be", "--corrupted", "Not to be", "--output", "out"],
        r"same number of tokens.*5 and 9",
        setup=[model],
    ),
    Case(
        "explain-attribute-target-not-one-token",
        ["explain", "attribute", "m", "--text", "To be", "--target", "be", "--output", "out"],
        r"--target 'be' is 2 tokens",
        setup=[model],
    ),
    Case(
        "explain-memorization-bad-secret",
        ["explain", "memorization", "m", "--secret", "12ab", "--output", "out"],
        r"--secret '12ab'.*digits",
        setup=[model],
    ),
    Case(
        "explain-memorization-nothing-to-measure",
        ["explain", "memorization", "m", "--output", "out"],
        r"nothing to measure",
        setup=[model],
    ),
    Case(
        "explain-existing-output",
        ["explain", "attention", "m", "--text", "To be", "--output", "out"],
        r"out.*--overwrite",
        setup=[model, existing_output],
    ),
    # ---- export (GGUF for llama.cpp, ONNX for ONNX Runtime)
    Case(
        "export-gguf-char-tokenizer",
        ["export", "gguf", "m", "out.gguf"],
        r"tokenizer is 'char'.*BPE",
        setup=[model],
    ),
    Case(
        "export-gguf-unexpressible-arch",
        ["export", "gguf", "m", "out.gguf"],
        r"positions='sinusoidal'",
        setup=[broken(model_fields(positions="sinusoidal"))],
    ),
    Case(
        "export-gguf-q8_0-encoder",
        ["export", "gguf", "m", "out.gguf", "--dtype", "q8_0"],
        r"q8_0.*arch=encoder",
        setup=[broken(model_fields(arch="encoder"))],
    ),
    Case(
        "export-gguf-existing-output",
        ["export", "gguf", "m", "out.gguf"],
        r"out\.gguf already exists.*--overwrite",
        {"out.gguf": "mine"},
        [model],
    ),
    Case("export-gguf-no-model", ["export", "gguf", "nope", "out.gguf"], r"nope"),
    Case(
        "export-onnx-encoder-decoder",
        ["export", "onnx", "m", "out"],
        r"arch=encoder-decoder",
        setup=[broken(model_fields(arch="encoder-decoder"))],
    ),
    Case(
        "export-onnx-existing-output",
        ["export", "onnx", "m", "out"],
        r"out.*--overwrite",
        setup=[model, existing_output],
    ),
    # ---- finetune chat: conversations (tests/tasks/test_chat.py checks each message's rules)
    Case(
        "finetune-chat-no-assistant-turn",
        ["finetune", "chat", *FT, "--train", "t.jsonl"],
        r"t\.jsonl:2.*no assistant turn",
        setup=[model, records("t.jsonl", [CHAT, json.dumps({"messages": [CHAT_USER]})])],
    ),
    Case(
        "finetune-chat-malformed-messages",
        ["finetune", "chat", *FT, "--train", "t.jsonl"],
        r"t\.jsonl:1.*'messages'.*list",
        setup=[model, records("t.jsonl", [json.dumps({"messages": {"user": "hi"}}), CHAT])],
    ),
    Case(
        "finetune-chat-unknown-role",
        ["finetune", "chat", *FT, "--train", "t.jsonl"],
        r"t\.jsonl:1.*unknown role 'tool'.*system, user, assistant",
        setup=[model, records("t.jsonl", [CHAT.replace('"user"', '"tool"'), CHAT])],
    ),
]


@pytest.fixture(scope="module", autouse=True)
def tiny_model(tmp_path_factory):
    global MODEL
    MODEL = char_model_dir(tmp_path_factory.mktemp("model") / "m", [TEXT], block_size=16)


def listing(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case: Case, tmp_path):
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")
    for make in case.setup:
        make(tmp_path)
    before = listing(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", *case.argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("lmforge: error: "), done.stderr[-2000:]
    assert re.search(case.pattern, lines[0], re.IGNORECASE), lines[0]
    assert listing(tmp_path) == before, "the command created or changed files"


def test_the_matrix_covers_every_command():
    commands = {c.argv[0] for c in CASES}
    assert commands >= {
        "pretrain", "generate", "chat", "bench-generate", "evaluate", "finetune",
        "corpus", "tokenizer", "model", "convert", "embeddings", "lora", "data",
        "export", "explain", "serve",
    }  # fmt: skip
    assert len(CASES) >= 40
