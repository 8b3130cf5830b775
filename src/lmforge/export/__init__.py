"""Exports that run a model without PyTorch: GGUF for llama.cpp (gguf.py) and ONNX for ONNX
Runtime (onnx.py). Each writes through a temporary name and renames, so a failed export
leaves nothing behind; docs/export.md has the commands, the name mappings and the figures."""

from lmforge.export.gguf import export_gguf
from lmforge.export.onnx import export_onnx

__all__ = ["export_gguf", "export_onnx"]
