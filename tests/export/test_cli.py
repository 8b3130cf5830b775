"""`lmforge export gguf|onnx` through the CLI entry point (bad input: tests/e2e)."""

from __future__ import annotations

from lmforge.cli import main
from tests.export.model_dirs import gpt2_dir


def test_export_gguf_command(tmp_path, capsys):
    model_dir = gpt2_dir(tmp_path / "m")
    assert main(["export", "gguf", str(model_dir), str(tmp_path / "m.gguf"), "--dtype", "f16"]) == 0
    said = capsys.readouterr().out
    assert "gpt2, f16, bpe tokenizer" in said and "m.gguf" in said
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"
    assert main(["export", "gguf", str(model_dir), str(tmp_path / "m.gguf")]) == 2
    assert main(["export", "gguf", str(model_dir), str(tmp_path / "m.gguf"), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.gguf"]
