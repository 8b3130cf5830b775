"""The command line as a user meets it: the happy path and every documented error path."""

import json
import subprocess
import sys

import pytest

from lmforge import __version__
from lmforge.cli import main
from tests.conftest import tiny_overrides


def overrides(corpus, out_dir, **extra):
    args = []
    for key, value in tiny_overrides(corpus, out_dir, **extra).items():
        value = f"[{', '.join(value)}]" if isinstance(value, list) else value
        args.append(f"--{key}={value}")
    return args


def run_cli(*argv, capsys):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help_via_python_m():
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"lmforge {__version__}"
    helptext = subprocess.run(
        [sys.executable, "-m", "lmforge", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("pretrain", "generate", "evaluate", "corpus", "tokenizer"):
        assert command in helptext


def test_pretrain_then_generate_and_evaluate(corpus_dir, tmp_path, capsys):
    code, out, err = run_cli(
        "pretrain",
        "shakespeare-char",
        "--no-progress",
        *overrides(corpus_dir, tmp_path),
        capsys=capsys,
    )
    assert code == 0, err
    run_dir = tmp_path / "tiny"
    for name in (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "train_state.pt",
        "metrics.jsonl",
        "results.json",
        "samples.txt",
        "loss.png",
        "data/train.bin",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run_dir / "results.json").read_text())
    assert "bits per byte" in out and f"{results['valid_bits_per_byte']:.4f}" in out
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["n_layer"] == 2 and saved["model"]["vocab_size"] > 10

    args = ("generate", str(run_dir), "--prompt", "All:", "--max-new-tokens", "40", "--seed", "3")
    code, first, _ = run_cli(*args, capsys=capsys)
    code2, second, _ = run_cli(*args, capsys=capsys)
    assert code == code2 == 0 and first == second and first.startswith("All:")
    assert len(first.strip()) > len("All:")

    # By default the run's own held-out split: the figure pretrain reported.
    code, out, _ = run_cli("evaluate", str(run_dir), capsys=capsys)
    assert code == 0
    assert json.loads(out)["bpb"] == pytest.approx(results["valid_bits_per_byte"], rel=1e-6)
    code, out, _ = run_cli("evaluate", str(run_dir), "--corpus", str(corpus_dir), capsys=capsys)
    assert code == 0 and json.loads(out)["bpb"] > 0


def test_resume_needs_only_the_run_name(corpus_dir, tmp_path, capsys):
    """--resume starts from the run's saved config; overrides given now apply on top."""
    args = overrides(corpus_dir, tmp_path, **{"train.max_steps": 4, "model.n_layer": 1})
    assert run_cli("pretrain", "shakespeare-char", "--no-progress", *args, capsys=capsys)[0] == 0
    code, out, err = run_cli(
        "pretrain",
        "shakespeare-char",
        "--no-progress",
        "--resume",
        f"--run.out_dir={tmp_path}",
        "--run.name=tiny",
        "--train.max_steps=6",
        capsys=capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "tiny" / "results.json").read_text())["steps"] == 6
    saved = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert saved["model"]["n_layer"] == 1 and saved["train"]["max_steps"] == 6


def test_too_little_text_costs_nothing(corpus_dir, tmp_path, capsys):
    args = (
        "pretrain",
        "shakespeare-char",
        *overrides(corpus_dir, tmp_path, **{"train.max_steps": 2}),
    )
    assert run_cli(*args, "--no-progress", capsys=capsys)[0] == 0
    weights = tmp_path / "tiny" / "model.safetensors"
    before = weights.read_bytes()
    short = tmp_path / "short"
    short.mkdir()
    for i in range(3):
        (short / f"{i}.txt").write_text("tiny text\n")
    code, _, err = run_cli(*args, "--run.overwrite=true", f"--data.corpus={short}", capsys=capsys)
    assert code == 2 and "too few for windows of 32" in one_error_line(err)
    assert weights.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "short", "tiny"]


def test_builtin_corpus_end_to_end(tmp_path, capsys):
    code, out, err = run_cli(
        "pretrain",
        "shakespeare-char",
        "--no-progress",
        f"--run.out_dir={tmp_path}",
        "--run.name=s",
        "--model.n_layer=1",
        "--model.n_embd=16",
        "--model.n_head=1",
        "--model.block_size=16",
        "--train.max_steps=3",
        "--train.batch_size=2",
        "--run.sample_tokens=5",
        capsys=capsys,
    )
    assert code == 0, err
    assert "corpus: 32 train / 6 valid documents" in out
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert 1.0 < results["valid_bits_per_byte"] < 8.0


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmforge: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.n_layr=3"], "unknown config key 'model.n_layr'"),
        (["--model.n_head=3"], "not divisible by n_head=3"),
        (["--train.precision=fp8"], "train.precision"),
        (["--data.corpus=/no/such/file.txt"], "corpus file not found"),
    ],
)
def test_config_and_input_errors(corpus_dir, tmp_path, capsys, extra, message):
    code, _, err = run_cli(
        "pretrain", "shakespeare-char", *overrides(corpus_dir, tmp_path), *extra, capsys=capsys
    )
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "tiny").exists()


def test_unknown_preset(tmp_path, capsys):
    code, _, err = run_cli("pretrain", "no-such-preset", f"--run.out_dir={tmp_path}", capsys=capsys)
    assert code == 2 and "unknown preset 'no-such-preset'" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_empty_and_non_utf8_corpora(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli("pretrain", "shakespeare-char", f"--data.corpus={empty}", capsys=capsys)
    assert code == 2 and "holds no text" in one_error_line(err)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\x80def")
    code, _, err = run_cli("pretrain", "shakespeare-char", f"--data.corpus={bad}", capsys=capsys)
    assert code == 2 and "invalid UTF-8 at byte 3" in one_error_line(err)


def test_existing_run_is_not_overwritten(corpus_dir, tmp_path, capsys):
    args = (
        "pretrain",
        "shakespeare-char",
        *overrides(corpus_dir, tmp_path, **{"train.max_steps": 2}),
    )
    assert run_cli(*args, "--no-progress", capsys=capsys)[0] == 0
    weights = tmp_path / "tiny" / "model.safetensors"
    before = weights.read_bytes()
    code, _, err = run_cli(*args, "--model.n_layer=1", capsys=capsys)
    assert code == 2 and "already exists" in one_error_line(err)
    assert weights.read_bytes() == before
    code, _, err = run_cli(*args, "--model.n_layer=1", "--resume", capsys=capsys)
    assert code == 2 and "different config" in one_error_line(err)
    assert weights.read_bytes() == before
    # Even with --run.overwrite=true, a corpus that cannot be read costs nothing.
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(*args, "--run.overwrite=true", f"--data.corpus={empty}", capsys=capsys)
    assert code == 2 and "holds no text" in one_error_line(err)
    assert weights.read_bytes() == before


def test_truncated_checkpoint_via_cli(corpus_dir, tmp_path, capsys):
    args = (
        "pretrain",
        "shakespeare-char",
        *overrides(corpus_dir, tmp_path, **{"train.max_steps": 2}),
    )
    assert run_cli(*args, "--no-progress", capsys=capsys)[0] == 0
    weights = tmp_path / "tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    code, _, err = run_cli(*args, "--resume", capsys=capsys)
    assert code == 2 and "truncated or corrupt" in one_error_line(err)
    code, _, err = run_cli("generate", str(tmp_path / "tiny"), capsys=capsys)
    assert code == 2 and "truncated or corrupt" in one_error_line(err)


def test_resume_without_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(
        "pretrain", "shakespeare-char", f"--run.out_dir={tmp_path}", "--resume", capsys=capsys
    )
    assert code == 2 and "no run to resume" in one_error_line(err)
    (tmp_path / "shakespeare-char").mkdir()  # the preset's run.name
    (tmp_path / "shakespeare-char" / "config.json").write_text("{}")
    code, _, err = run_cli(
        "pretrain", "shakespeare-char", f"--run.out_dir={tmp_path}", "--resume", capsys=capsys
    )
    assert code == 2 and "nothing to resume" in one_error_line(err)


def test_generate_errors(corpus_dir, tmp_path, capsys):
    code, _, err = run_cli("generate", str(tmp_path), capsys=capsys)
    assert code == 2 and "no tokenizer.json" in one_error_line(err)


def test_unrecognized_argument_for_plain_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "x", "--bogus"])
    assert e.value.code == 2


def test_corpus_and_tokenizer_commands(corpus_dir, tmp_path, capsys):
    code, out, _ = run_cli("corpus", "stats", capsys=capsys)
    assert code == 0 and "train: 32 documents" in out and "Hamlet" in out
    code, out, _ = run_cli(
        "tokenizer",
        "train",
        str(corpus_dir),
        "--algorithm",
        "char",
        "--output",
        str(tmp_path / "tok"),
        capsys=capsys,
    )
    assert code == 0 and (tmp_path / "tok" / "tokenizer.json").is_file()
    code, out, _ = run_cli("tokenizer", "encode", str(tmp_path / "tok"), "All:", capsys=capsys)
    assert code == 0 and json.loads(out)["tokens"] == ["A", "l", "l", ":"]
    assert json.loads(out)["offsets"] == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_bpe_tokenizer_commands(corpus_dir, tmp_path, capsys):
    import tokenizers as hf

    out_dir = tmp_path / "bpe"
    code, out, err = run_cli(
        "tokenizer",
        "train",
        str(corpus_dir),
        "--vocab-size",
        "300",
        "--output",
        str(out_dir),
        capsys=capsys,
    )
    assert code == 0, err
    reference = hf.Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    code, out, _ = run_cli("tokenizer", "encode", str(out_dir), "All: speak", capsys=capsys)
    assert json.loads(out)["ids"] == reference.encode("All: speak").ids
    code, out, _ = run_cli("tokenizer", "stats", str(out_dir), str(corpus_dir), capsys=capsys)
    stats = json.loads(out)
    text = "".join(p.read_text() for p in sorted(corpus_dir.iterdir()))
    expected_tokens = sum(len(reference.encode(p.read_text()).ids) for p in corpus_dir.iterdir())
    assert stats["tokens"] == expected_tokens and stats["bytes"] == len(text.encode())
    assert 0 < stats["vocab_used"] <= 300


def test_tokenizer_errors(corpus_dir, tmp_path, capsys):
    code, _, err = run_cli(
        "tokenizer",
        "train",
        str(corpus_dir),
        "--vocab-size",
        "100",
        "--output",
        str(tmp_path / "t"),
        capsys=capsys,
    )
    assert code == 2 and "smaller than the 256 byte tokens" in one_error_line(err)
    assert not (tmp_path / "t").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tokenizer.json").write_text('{"model": {"type": "Mystery"}}')
    code, _, err = run_cli("tokenizer", "encode", str(tmp_path / "other"), "x", capsys=capsys)
    assert code == 2 and "not supported" in one_error_line(err)


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece", "unigram"])
def test_pretrain_with_each_subword_tokenizer(corpus_dir, tmp_path, capsys, algorithm):
    args = overrides(corpus_dir, tmp_path, **{"train.max_steps": 3})
    code, out, err = run_cli(
        "pretrain",
        "shakespeare-char",
        "--no-progress",
        *args,
        f"--data.tokenizer={algorithm}",
        "--data.vocab_size=300",
        capsys=capsys,
    )
    assert code == 0, err
    from lmforge.tokenizers import Tokenizer

    tok = Tokenizer.load(tmp_path / "tiny")
    assert tok.algorithm == algorithm and tok.vocab_size <= 300
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert results["valid_bits_per_byte"] > 0
