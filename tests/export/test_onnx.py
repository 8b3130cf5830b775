"""ONNX export, run in ONNX Runtime: its logits equal ours in fp32 for a prefill and for decode
steps that pass the key/value cache back in (GPT-2 and a Llama with RoPE and grouped-query
attention), a fine-tuned classifier gives the same labels and scores as lmforge.pipeline,
and an embedding model the same mean-pooled vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmforge
from lmforge.errors import LmforgeError
from lmforge.export.onnx import export_onnx
from lmforge.infer.loading import load_tokenizer
from lmforge.models import from_pretrained
from lmforge.models.sentence import sentence_embeddings
from lmforge.nn import KVCache
from tests.export.model_dirs import bert_dir, gpt2_dir, llama_dir
from tests.tasks.conftest import make_base, sentiment_records, write_jsonl

ort = pytest.importorskip("onnxruntime")
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """name -> (model directory, ONNX directory), exported on first use (about 10 s each)."""
    root = tmp_path_factory.mktemp("onnx")
    made = {}

    def get(name):
        if name not in made:
            model_dir = {"gpt2": gpt2_dir, "llama": llama_dir}[name](root / name)
            export_onnx(model_dir, root / f"{name}-onnx")
            made[name] = (model_dir, root / f"{name}-onnx")
        return made[name]

    return get


def session(directory):
    return ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])


def feeds(c, ids, mask, positions, past):
    f = {
        "input_ids": ids.numpy(),
        "attention_mask": mask.numpy(),
        "position_ids": positions.numpy(),
    }
    for i in range(c.n_layer):
        f[f"past_key_values.{i}.key"], f[f"past_key_values.{i}.value"] = past[2 * i : 2 * i + 2]
    return f


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_prefill_and_decode_with_cache_match_ours(decoders, name):
    model_dir, onnx_dir = decoders(name)
    model = from_pretrained(model_dir)
    c = model.config
    manifest = json.loads((onnx_dir / "export.json").read_text())
    assert manifest["kind"] == "decoder" and manifest["opset"] == 18
    s = session(onnx_dir)
    assert [i.name for i in s.get_inputs()][:3] == ["input_ids", "attention_mask", "position_ids"]
    torch.manual_seed(1)
    b, t = 2, 9
    ids = torch.randint(0, c.vocab_size, (b, t))
    empty = np.zeros((b, c.kv_heads, 0, c.head_width), np.float32)
    out = s.run(
        None,
        feeds(
            c,
            ids,
            torch.ones(b, t, dtype=torch.long),
            torch.arange(t).repeat(b, 1),
            [empty] * (2 * c.n_layer),
        ),
    )
    cache = KVCache()
    with torch.no_grad():
        ours = model(ids, cache=cache)
    torch.testing.assert_close(torch.from_numpy(out[0]), ours, **TOL)
    assert out[1].shape == (b, c.kv_heads, t, c.head_width)
    # three decode steps, each feeding back the presents, against our KV cache
    for step in range(3):
        nxt = ours[:, -1].argmax(-1, keepdim=True)
        n = t + step + 1
        out = s.run(
            None,
            feeds(c, nxt, torch.ones(b, n, dtype=torch.long), torch.full((b, 1), n - 1), out[1:]),
        )
        with torch.no_grad():
            ours = model(nxt, cache=cache)
        torch.testing.assert_close(torch.from_numpy(out[0]), ours, **TOL)
        torch.testing.assert_close(torch.from_numpy(out[1]), cache.layers[0].k, **TOL)


def test_left_padded_batch_matches_ours(decoders):
    model_dir, onnx_dir = decoders("llama")
    model = from_pretrained(model_dir)
    c = model.config
    ids = torch.randint(0, c.vocab_size, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    empty = np.zeros((2, c.kv_heads, 0, c.head_width), np.float32)
    out = session(onnx_dir).run(None, feeds(c, ids, mask, positions, [empty] * (2 * c.n_layer)))
    with torch.no_grad():
        ours = model(ids, mask, positions=positions)
    real = mask.bool()
    torch.testing.assert_close(torch.from_numpy(out[0])[real], ours[real], **TOL)


def test_fine_tuned_classifier_gives_the_same_labels_and_scores(tmp_path):
    from lmforge.tasks.finetune import finetune

    base = make_base(tmp_path, "bert", "wordpiece", "base")
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(64, 0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_records(16, 1))
    tuned = tmp_path / "tuned"
    overrides = {"train.learning_rate": 3e-3, "train.batch_size": 8, "train.device": "cpu"}
    finetune("sentiment", base, train, tuned, valid, epochs=2, overrides=overrides,
             progress=False, log=lambda m: None)  # fmt: skip
    export_onnx(tuned, tmp_path / "onnx")
    texts = ["the king was lovely", "the day was vile", "the song was sweet", "a grim night"]
    expected = lmforge.pipeline("sentiment", model=tuned)(texts)

    tok = load_tokenizer(tmp_path / "onnx")  # the tokenizer travels with the export
    enc = [tok.encode(t) for t in texts]
    width = max(map(len, enc))
    ids = np.array([e + [0] * (width - len(e)) for e in enc], np.int64)
    mask = np.array([[1] * len(e) + [0] * (width - len(e)) for e in enc], np.int64)
    logits = session(tmp_path / "onnx").run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels = json.loads((tmp_path / "onnx" / "config.json").read_text())["task"]["labels"]
    for row, want in zip(probs, expected):
        assert labels[int(row.argmax())] == want["label"]
        assert float(row.max()) == pytest.approx(want["score"], abs=1e-4)


def test_embedding_model_gives_our_sentence_vectors(tmp_path):
    model_dir = bert_dir(tmp_path / "bert", head="none")
    export_onnx(model_dir, tmp_path / "onnx")
    s = session(tmp_path / "onnx")
    assert [o.name for o in s.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    model = from_pretrained(model_dir)
    tok = load_tokenizer(model_dir)
    texts = ["speak, speak.", "you are all resolved rather to die than to famish?"]
    ours = sentence_embeddings(model, tok, texts, normalize=False)
    enc = [tok.encode(t) for t in texts]
    width = max(map(len, enc))
    ids = np.array([e + [0] * (width - len(e)) for e in enc], np.int64)
    mask = np.array([[1] * len(e) + [0] * (width - len(e)) for e in enc], np.int64)
    got = s.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})[1]
    torch.testing.assert_close(torch.from_numpy(got), torch.as_tensor(ours).float(), **TOL)


def test_refusals(tmp_path, decoders):
    base = make_base(tmp_path, "bart", "bpe", "bart")
    with pytest.raises(LmforgeError, match=r"arch=encoder-decoder"):
        export_onnx(base, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(LmforgeError, match=r"--overwrite"):
        export_onnx(decoders("gpt2")[0], tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
