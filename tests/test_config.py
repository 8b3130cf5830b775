import pytest

from lmforge.config import (
    Config,
    build_config,
    describe_fields,
    load_config,
    parse_overrides,
    preset_names,
)
from lmforge.errors import LmforgeError


def test_overrides_are_coerced_to_field_types():
    got = parse_overrides(
        [
            "--model.n_layer=6",
            "--train.compile",
            "true",
            "--data.corpus=[a.txt, b.txt]",
            "--run.sample_prompt=ROMEO: yes",
            "--run.name=123",
            "--train.max_minutes=null",
        ]
    )
    cfg = build_config({}, got)
    assert cfg.model.n_layer == 6 and cfg.train.compile is True
    assert cfg.data.corpus == ["a.txt", "b.txt"]
    assert cfg.run.sample_prompt == "ROMEO: yes" and cfg.run.name == "123"
    assert cfg.train.max_minutes is None


@pytest.mark.parametrize("bad", [["model.n_layer=6"], ["--model.n_layer"], ["--verbose"]])
def test_malformed_overrides_are_errors(bad):
    with pytest.raises(LmforgeError):
        parse_overrides(bad)


def test_presets_load_and_validate():
    assert "shakespeare-char" in preset_names()
    for name in preset_names():
        assert isinstance(load_config(name), Config)


def test_override_applies_to_preset():
    cfg = load_config("shakespeare-char", {"model.n_layer": 3, "train.seed": 7})
    assert cfg.model.n_layer == 3 and cfg.train.seed == 7


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(LmforgeError) as e:
        build_config({}, {"model.n_layr": 3})
    msg = str(e.value)
    assert "model.n_layr" in msg and "did you mean 'n_layer'" in msg and "\n" not in msg


def test_unknown_section():
    with pytest.raises(LmforgeError, match="unknown config key 'optim'"):
        build_config({"optim": {"lr": 1}})


def test_bad_choice_lists_valid_choices():
    with pytest.raises(LmforgeError) as e:
        build_config({}, {"train.precision": "fp8"})
    assert "train.precision" in str(e.value) and "'bf16'" in str(e.value)


def test_bad_type_and_range():
    with pytest.raises(LmforgeError, match="model.n_layer"):
        build_config({}, {"model.n_layer": "many"})
    with pytest.raises(LmforgeError, match="train.learning_rate"):
        build_config({}, {"train.learning_rate": -1})


def test_width_must_divide_by_heads():
    with pytest.raises(LmforgeError, match="'model.n_head' = '5'.*not divisible by n_head=5"):
        build_config({}, parse_overrides(["--model.n_embd=64", "--model.n_head=5"]))


def test_unknown_preset_lists_presets():
    with pytest.raises(LmforgeError, match="shakespeare-char"):
        load_config("no-such-preset")


def test_missing_yaml_file(tmp_path):
    with pytest.raises(LmforgeError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_layer: 2\ntrain:\n  seed: 5\n")
    cfg = load_config(str(path))
    again = build_config(cfg.model_dump(mode="json"))
    assert again == cfg and again.model.n_layer == 2


def test_help_lists_every_field():
    text = describe_fields()
    for section in ("model", "data", "train", "run"):
        for name in Config.model_fields[section].annotation.model_fields:
            assert f"--{section}.{name} " in text


def test_gpt2_124m_preset_is_gpt2_small():
    transformers = pytest.importorskip("transformers")
    import torch

    from lmforge.models import Transformer

    cfg = load_config("gpt2-124m")
    with torch.device("meta"):  # shapes only: no 500 MB of weights
        ours = Transformer(cfg.model.model_copy(update={"vocab_size": cfg.data.vocab_size}))
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert ours.num_parameters() == theirs.num_parameters() == 124_439_808
