"""GGUF export, checked without llama.cpp: the file read back with gguf's own GGUFReader,
every tensor compared with our weights under llama.cpp's names (spelled out here by hand,
from llama.cpp's gpt2 and llama graphs, not taken from our table), the metadata keys and the
tokenizer arrays. tests/export/test_llama_cpp.py (slow) runs the files in llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.export import gguf as export
from lmforge.models import from_pretrained
from lmforge.nn.positions import apply_rope, rope_angles
from lmforge.tokenizers import Tokenizer
from tests.export.model_dirs import bert_dir, gpt2_dir, llama_dir
from tests.infer.model_dirs import char_model_dir

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {"gpt2": gpt2_dir(root / "gpt2"), "llama": llama_dir(root / "llama"), "root": root}


def read(path):
    """(metadata {key: value}, tensors {name: (fp32 array in our (out, in) order, type)})."""
    reader = gguf.GGUFReader(str(path))
    meta = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        values = [f.parts[i] for i in f.data]
        if f.types[0] == gguf.GGUFValueType.STRING or (
            f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.STRING
        ):
            values = [bytes(v).decode("utf-8") for v in values]
        else:
            values = [v.tolist()[0] for v in values]
        meta[key] = values if f.types[0] == gguf.GGUFValueType.ARRAY else values[0]
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists ne[0] first
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        tensors[t.name] = (np.asarray(data, dtype=np.float32), t.tensor_type)
    return meta, tensors


def test_gpt2_tensors_metadata_and_bpe_vocabulary(dirs, tmp_path):
    out = tmp_path / "m.gguf"
    result = export.export_gguf(dirs["gpt2"], out)
    model = from_pretrained(dirs["gpt2"])
    c, w = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    meta, tensors = read(out)

    assert meta["general.architecture"] == "gpt2" and result.arch == "gpt2"
    assert meta["general.file_type"] == 0
    assert meta["gpt2.context_length"] == c.block_size == 64
    assert meta["gpt2.embedding_length"] == 64 and meta["gpt2.block_count"] == 2
    assert meta["gpt2.feed_forward_length"] == 256 and meta["gpt2.attention.head_count"] == 4
    assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)

    b = "decoder.blocks.{}."
    expected = {"token_embd.weight": w["tok_embed.weight"]}
    expected["position_embd.weight"] = w["decoder.pos_embed.weight"]
    expected["output_norm.weight"] = w["decoder.final_norm.weight"]
    expected["output_norm.bias"] = w["decoder.final_norm.bias"]
    for i in range(2):
        p = b.format(i)
        for part in ("weight", "bias"):
            expected[f"blk.{i}.attn_norm.{part}"] = w[p + f"attn_norm.{part}"]
            expected[f"blk.{i}.attn_qkv.{part}"] = np.concatenate(
                [w[p + f"attn.{x}.{part}"] for x in "qkv"]
            )
            expected[f"blk.{i}.attn_output.{part}"] = w[p + f"attn.out.{part}"]
            expected[f"blk.{i}.ffn_norm.{part}"] = w[p + f"mlp_norm.{part}"]
            expected[f"blk.{i}.ffn_up.{part}"] = w[p + f"mlp.up.{part}"]
            expected[f"blk.{i}.ffn_down.{part}"] = w[p + f"mlp.down.{part}"]
    # tied head: no output.weight, llama.cpp reuses token_embd
    assert set(tensors) == set(expected)
    for name, want in expected.items():
        got, kind = tensors[name]
        assert kind == gguf.GGMLQuantizationType.F32, name
        np.testing.assert_array_equal(got, want, err_msg=name)

    tok = Tokenizer.load(dirs["gpt2"])
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.tokens"] == [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert meta["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in tok.merges]
    eot = tok.token_to_id("<|endoftext|>")
    types = meta["tokenizer.ggml.token_type"]
    assert types[eot] == 3 and types.count(3) == 1 and set(types) == {1, 3}
    assert meta["tokenizer.ggml.eos_token_id"] == meta["tokenizer.ggml.bos_token_id"] == eot
    assert meta["tokenizer.ggml.add_bos_token"] is False


def interleaved_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """llama.cpp's llama graph (rope mode NORM): pairs (2i, 2i+1) turn by pos * base^(-2i/d).
    Written out here, independently of nn/positions.py."""
    d = x.size(-1)
    theta = positions[:, None].float() * base ** (-torch.arange(0, d, 2).float() / d)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * theta.cos() - odd * theta.sin()
    out[..., 1::2] = even * theta.sin() + odd * theta.cos()
    return out


def test_llama_rope_permutation_gqa_and_unigram_vocabulary(dirs, tmp_path):
    out = tmp_path / "m.gguf"
    export.export_gguf(dirs["llama"], out)
    model = from_pretrained(dirs["llama"])
    c, w = model.config, {k: v for k, v in model.state_dict().items()}
    meta, tensors = read(out)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.attention.head_count"] == 4 and meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.rope.freq_base"] == pytest.approx(500.0)
    assert meta["llama.rope.dimension_count"] == 16
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert meta["llama.feed_forward_length"] == 96
    names = {"token_embd.weight", "output_norm.weight", "output.weight"}  # untied: output kept
    for i in range(2):
        names |= {f"blk.{i}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v")}
        names |= {f"blk.{i}.{n}.weight" for n in ("attn_output", "ffn_norm", "ffn_gate")}
        names |= {f"blk.{i}.{n}.weight" for n in ("ffn_up", "ffn_down")}
    assert set(tensors) == names
    p = "decoder.blocks.1."
    for theirs, ours in [
        ("output.weight", "head.out.weight"),
        ("blk.1.attn_v.weight", p + "attn.v.weight"),
        ("blk.1.ffn_gate.weight", p + "mlp.gate.weight"),
        ("blk.1.ffn_down.weight", p + "mlp.down.weight"),
    ]:
        np.testing.assert_array_equal(tensors[theirs][0], w[ours].numpy(), err_msg=theirs)
    # The permuted W^Q, W^K under llama.cpp's interleaved RoPE give our attention scores.
    x = torch.randn(5, c.n_embd)
    pos = torch.arange(3, 8)
    d = c.head_width
    wq = torch.tensor(tensors["blk.1.attn_q.weight"][0])
    wk = torch.tensor(tensors["blk.1.attn_k.weight"][0])
    assert not torch.equal(wq, w[p + "attn.q.weight"])  # it is permuted
    cos, sin = rope_angles(pos, d, c.rope_base)
    for h in range(c.n_head):
        g = h // (c.n_head // c.kv_heads)  # the key head this query head shares
        q_ours = apply_rope((x @ w[p + "attn.q.weight"].T)[:, h * d : (h + 1) * d], cos, sin)
        k_ours = apply_rope((x @ w[p + "attn.k.weight"].T)[:, g * d : (g + 1) * d], cos, sin)
        q_them = interleaved_rope((x @ wq.T)[:, h * d : (h + 1) * d], pos, c.rope_base)
        k_them = interleaved_rope((x @ wk.T)[:, g * d : (g + 1) * d], pos, c.rope_base)
        torch.testing.assert_close(q_them @ k_them.T, q_ours @ k_ours.T, rtol=1e-5, atol=1e-4)

    tok = Tokenizer.load(dirs["llama"])
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.tokens"] == [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert meta["tokenizer.ggml.scores"] == pytest.approx(
        [tok.score(i) for i in range(tok.vocab_size)]
    )
    assert meta["tokenizer.ggml.unknown_token_id"] == tok.unk_id
    assert meta["tokenizer.ggml.token_type"][tok.unk_id] == 2
    assert meta["tokenizer.ggml.add_space_prefix"] is True


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_f16_and_q8_0_store_matrices_within_their_rounding(dirs, tmp_path, dtype):
    out = tmp_path / "m.gguf"
    export.export_gguf(dirs["llama"], out, dtype)
    model = from_pretrained(dirs["llama"])
    meta, tensors = read(out)
    assert meta["general.file_type"] == {"f16": 1, "q8_0": 7}[dtype]
    want_type = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    ours = model.state_dict()
    got, kind = tensors["blk.0.ffn_up.weight"]
    assert kind == want_type[dtype]
    assert tensors["blk.0.attn_norm.weight"][1] == gguf.GGMLQuantizationType.F32  # vectors
    w = ours["decoder.blocks.0.mlp.up.weight"].numpy()
    if dtype == "f16":
        np.testing.assert_allclose(got, w, rtol=2**-11, atol=2**-24)
    else:  # each block of 32 shares a scale amax/127; a value is off by at most half a step
        blocks = w.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127
        err = np.abs(got.reshape(-1, 32) - blocks)
        # + the scale is stored in f16 (relative error 2^-11), times up to 127 steps
        assert (err <= step * (0.5 + 127 * 2**-11) + 1e-7).all()
        assert np.abs(got.reshape(-1, 32) - blocks).max() > 0


def test_a_failed_write_leaves_no_file(dirs, tmp_path, monkeypatch):
    out = tmp_path / "m.gguf"

    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_array", boom)
    with pytest.raises(RuntimeError):
        export.export_gguf(dirs["gpt2"], out)
    assert list(tmp_path.iterdir()) == []


def test_refusals_name_the_field(dirs, tmp_path):
    root = dirs["root"]
    with pytest.raises(LmforgeError, match=r"activation='gelu'.*tanh"):
        export.export_gguf(gpt2_dir(root / "erf", activation="gelu"), tmp_path / "a.gguf")
    with pytest.raises(LmforgeError, match=r"positions='sinusoidal'"):
        export.export_gguf(gpt2_dir(root / "sin", positions="sinusoidal"), tmp_path / "b.gguf")
    bert = bert_dir(root / "bert")
    with pytest.raises(LmforgeError, match=r"q8_0.*arch=encoder"):
        export.export_gguf(bert, tmp_path / "c.gguf", "q8_0")
    with pytest.raises(LmforgeError, match=r"arch=encoder.*onnx"):
        export.export_gguf(bert, tmp_path / "c.gguf")
    chars = char_model_dir(root / "char", ["some text to learn"])
    with pytest.raises(LmforgeError, match=r"tokenizer is 'char'"):
        export.export_gguf(chars, tmp_path / "d.gguf")
    (tmp_path / "e.gguf").write_bytes(b"mine")
    with pytest.raises(LmforgeError, match=r"already exists.*--overwrite"):
        export.export_gguf(dirs["gpt2"], tmp_path / "e.gguf")
    assert (tmp_path / "e.gguf").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.gguf"]
    export.export_gguf(dirs["gpt2"], tmp_path / "e.gguf", overwrite=True)
    assert (tmp_path / "e.gguf").read_bytes()[:4] == b"GGUF"
