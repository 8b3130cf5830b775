"""`lmforge explain` on tiny model directories built here: every action writes its pictures
(each reopened and checked not to be blank) and JSON, and the JSON's numbers agree with the
model's own forward pass: the lens's last layer is the model's prediction and loss, an
attribution's default target is the model's top token or class and its scores add up to
F(x) - F(baseline), patching the only changed position at layer 0 restores the whole gap."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main
from lmforge.config import load_model_preset
from lmforge.infer import load_model_and_tokenizer
from lmforge.interpret import patterns
from lmforge.models import Transformer
from lmforge.models.io import save_model_dir
from lmforge.tokenizers import Tokenizer
from tests.interpret.test_pictures import check_png

WORDS = ["good", "great", "fine", "bad", "vile", "grim"]
NOUNS = ["king", "song", "food", "play"]
TEXT = " ".join(f"the {n} was {a}. ROMEO: hello there." for n in NOUNS for a in WORDS)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_dir(root, name, preset, algorithm, labels=None, **fields):
    torch.manual_seed(0)
    tok = Tokenizer.train([TEXT] * 3, algorithm, 300)
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "dropout": 0.0}
    if labels:
        fields |= {"head": "sequence-classification", "num_labels": len(labels)}
    config = load_model_preset(preset, {**shape, "vocab_size": tok.vocab_size, **fields})
    model = Transformer(config)
    with torch.no_grad():  # off the init, so heads and layers differ clearly
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    directory = save_model_dir(model, root / name)
    tok.save(directory)
    if labels:
        path = directory / "config.json"
        config = json.loads(path.read_text())
        config["task"] = {"task": "classification", "labels": labels, "fields": {}}
        path.write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return {
        "lm": make_dir(root, "lm", "gpt2", "bpe"),
        "encdec": make_dir(root, "encdec", "bart", "bpe", n_decoder_layer=2),
        "bert-cls": make_dir(root, "bert-cls", "bert", "wordpiece", ["comedy", "tragedy", "x"]),
        "gpt-cls": make_dir(root, "gpt-cls", "gpt2", "bpe", ["pos", "neg"]),
    }  # fmt: skip


def explain(capsys, *argv) -> str:
    assert main(["explain", *map(str, argv)]) == 0
    return capsys.readouterr().out


def written(out: str) -> list[str]:
    return [line.split("-> ", 1)[1] for line in out.splitlines() if line.startswith("-> ")]


def check_pictures(out: str) -> dict:
    """Every file printed exists; PNGs are pictures; returns the JSON."""
    files = written(out)
    for f in files:
        if f.endswith(".png"):
            check_png(f, (100, 80))
    (numbers,) = [f for f in files if f.endswith(".json")]
    return json.loads(open(numbers).read())


def ids_of(directory, text):
    model, tok = load_model_and_tokenizer(directory)
    return model, tok, torch.tensor([tok.encode(text)])


def test_attention_of_a_decoder(dirs, tmp_path, capsys):
    text = "the king was good. ROMEO: hello"
    out = explain(capsys, "attention", dirs["lm"], "--text", text, "--output", tmp_path / "a")
    numbers = check_pictures(out)
    names = {p.split("/")[-1] for p in written(out)}
    assert {"attention-grid-decoder.png", "attention.html", "attention.json"} <= names
    assert {"attention-decoder-L1-H0.png", "attention-decoder-L1-H1.png"} <= names
    model, _, ids = ids_of(dirs["lm"], text)
    with torch.no_grad():
        want = patterns(model, ids)["decoder"][:, 0]
    got = torch.tensor(numbers["weights"]["decoder"])
    assert got.shape == want.shape == (2, 2, ids.size(1), ids.size(1))
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(got.sum(-1), torch.ones(2, 2, ids.size(1)), atol=1e-3)
    assert len(numbers["tokens"]["decoder"]["keys"]) == ids.size(1)
    assert "const DATA" in (tmp_path / "a" / "attention.html").read_text()


def test_attention_of_an_encoder_decoder_draws_cross_attention(dirs, tmp_path, capsys):
    out = explain(
        capsys, "attention", dirs["encdec"], "--text", "the song was vile",
        "--target", "who says hello", "--output", tmp_path / "a", "--layer", "0",
    )  # fmt: skip
    numbers = check_pictures(out)
    cross = torch.tensor(numbers["weights"]["cross"])
    enc, dec = numbers["tokens"]["encoder"]["keys"], numbers["tokens"]["decoder"]["keys"]
    assert cross.shape[-2:] == (len(dec), len(enc))  # target rows over source columns
    assert (tmp_path / "a" / "attention-cross-L0-H1.png").is_file()


def test_lens_last_layer_is_the_models_prediction_and_loss(dirs, tmp_path, capsys):
    text = "the king was good. ROMEO: hello there."
    corpus = tmp_path / "held.txt"
    corpus.write_text(TEXT)
    out = explain(
        capsys, "lens", dirs["lm"], "--text", text, "--output", tmp_path / "l",
        "--corpus", corpus, "--windows", 3, "--top-k", 3,
    )  # fmt: skip
    numbers = check_pictures(out)
    assert (tmp_path / "l" / "lens-loss.png").is_file()
    model, _, ids = ids_of(dirs["lm"], text)
    with torch.no_grad():
        logits = model(ids)[0]
    last = numbers["top_tokens"][-1]
    assert [cell[0]["id"] for cell in last] == logits.argmax(-1).tolist()
    probs = logits.softmax(-1)
    assert [cell[0]["p"] for cell in last] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    assert len(numbers["layers"]) == 3 and len(last[0]) == 3
    losses = numbers["loss_by_layer_nats"]
    own = float(F.cross_entropy(logits[:-1], ids[0, 1:]))
    assert losses["the text"][-1] == pytest.approx(own, rel=1e-4)
    assert len(losses["held-out corpus"]) == 3 and numbers["corpus_windows"] == 3


def test_attribute_an_lm_next_token(dirs, tmp_path, capsys):
    text = "the king was good. ROMEO:"
    out = explain(
        capsys, "attribute", dirs["lm"], "--text", text, "--output", tmp_path / "a",
        "--steps", 32,
    )  # fmt: skip
    numbers = check_pictures(out)
    assert (tmp_path / "a" / "attribution.html").read_text().count("<span") == len(
        numbers["tokens"]
    )
    model, _, ids = ids_of(dirs["lm"], text)
    with torch.no_grad():
        logits = model(ids)[0, -1]
    assert numbers["explained"]["id"] == int(logits.argmax())  # the default: the top token
    assert numbers["logit_at_input"] == pytest.approx(float(logits.max()), abs=1e-4)
    with torch.no_grad():  # F(baseline): zero embeddings in place of the tokens'
        zero = torch.zeros(1, ids.size(1), model.config.n_embd)
        base = model.head(inputs_embeds_hook(model, zero, ids))
    assert numbers["logit_at_baseline"] == pytest.approx(
        float(base[0, -1, numbers["explained"]["id"]]), abs=1e-4
    )
    spread = numbers["logit_at_input"] - numbers["logit_at_baseline"]
    assert sum(numbers["scores"]) == pytest.approx(spread + numbers["completeness_error"], abs=1e-4)
    assert abs(numbers["completeness_error"]) < 1e-3 * max(abs(spread), 1e-3)
    # a named target and another position; gradient x input
    out = explain(
        capsys, "attribute", dirs["lm"], "--text", text, "--output", tmp_path / "b",
        "--target", " the", "--position", 2, "--method", "gradient-x-input",
    )  # fmt: skip
    numbers = check_pictures(out)
    assert numbers["explained"]["position"] == 2 and numbers["explained"]["token"] == "·the"
    assert numbers["steps"] is None and "completeness_error" not in numbers


def inputs_embeds_hook(model, embeds, ids):
    """Run the body with `embeds` in place of the token embeddings (a plain module hook)."""
    handle = model.tok_embed.register_forward_hook(lambda m, a, out: embeds)
    try:
        return model.body(ids)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["bert-cls", "gpt-cls"])
def test_attribute_a_classifier(name, dirs, tmp_path, capsys):
    text = "the song was vile"
    out = explain(
        capsys, "attribute", dirs[name], "--text", text, "--output", tmp_path / "a",
        "--steps", 16,
    )  # fmt: skip
    numbers = check_pictures(out)
    model, tok, _ = ids_of(dirs[name], text)
    enc = tok.tokenize(text)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), torch.tensor([enc.type_ids]))[0]
    labels = json.loads((dirs[name] / "config.json").read_text())["task"]["labels"]
    assert numbers["explained"]["label"] == labels[int(logits.argmax())]
    assert numbers["logit_at_input"] == pytest.approx(float(logits.max()), abs=1e-4)
    assert numbers["tokens"][0] == ("[CLS]" if name == "bert-cls" else "the")
    assert sum(numbers["top"].values()) == pytest.approx(1.0, abs=1e-4)
    other = labels[int(logits.argmin())]
    out = explain(
        capsys, "attribute", dirs[name], "--text", text, "--output", tmp_path / "b",
        "--target", other, "--steps", 16,
    )  # fmt: skip
    numbers = check_pictures(out)
    assert numbers["explained"]["label"] == other
    assert numbers["logit_at_input"] == pytest.approx(float(logits.min()), abs=1e-4)


def test_patching_the_changed_token_at_the_first_layer_restores_everything(dirs, tmp_path, capsys):
    clean, corrupt = "the king was good", "the song was good"
    out = explain(
        capsys, "patch", dirs["lm"], "--text", clean, "--corrupted", corrupt,
        "--correct", " the", "--incorrect", " was", "--output", tmp_path / "p",
    )  # fmt: skip
    numbers = check_pictures(out)
    model, tok, a = ids_of(dirs["lm"], clean)
    _, _, b = ids_of(dirs["lm"], corrupt)
    changed = [i for i in range(a.size(1)) if a[0, i] != b[0, i]]
    assert len(changed) == 1
    good, bad = tok.encode(" the", False), tok.encode(" was", False)
    with torch.no_grad():
        want = [float(model(x)[0, -1, good[0]] - model(x)[0, -1, bad[0]]) for x in (a, b)]
    assert numbers["clean_logit_difference"] == pytest.approx(want[0], abs=1e-4)
    assert numbers["corrupted_logit_difference"] == pytest.approx(want[1], abs=1e-4)
    # resid_pre of layer 0 at the changed position is all the two runs differ in
    first = numbers["restored"][0]
    assert first[changed[0]] == pytest.approx(1.0, abs=1e-3)
    assert all(v == pytest.approx(0.0, abs=1e-3) for i, v in enumerate(first) if i != changed[0])
    assert numbers["tokens"][changed[0]] == "·king/·song"


def test_memorization_exposure_and_extraction(dirs, tmp_path, capsys):
    corpus = tmp_path / "train.txt"
    corpus.write_text(TEXT)
    out = explain(
        capsys, "memorization", dirs["lm"], "--secret", "123", "--secret", "4 5 6",
        "--samples", 200, "--probes", 5, "--probe-prefix", 8, "--probe-suffix", 8,
        "--corpus", corpus, "--output", tmp_path / "m",
    )  # fmt: skip
    numbers = check_pictures(out)
    assert (tmp_path / "m" / "exposure.png").is_file()
    rows = numbers["exposure"]
    assert [r["secret"] for r in rows] == [" 1 2 3", " 4 5 6"]
    for r in rows:  # exposure = -log2 of the estimated rank fraction
        rank = (1 + r["better_alternatives"]) / (r["samples"] + 1)
        assert r["exposure"] == pytest.approx(-torch.tensor(rank).log2().item(), abs=1e-4)
        assert r["samples"] == 200
    assert numbers["extraction"]["sequences"] == 5
    assert numbers["extraction"]["suffix_tokens"] == 8
