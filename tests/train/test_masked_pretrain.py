"""Masked-LM pretraining (BERT): the job runs end to end and learns; the evaluation corrupts
the same positions every time; wrong combinations are refused."""

import json
import math

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.tokenizers import Tokenizer
from lmforge.train.pretrain import masked_objective, pretrain
from lmforge.train.trainer import MaskedLM

ENCODER = {
    "model.arch": "encoder",
    "model.head": "mlm",
    "model.norm_position": "post",
    "model.embedding_norm": True,
    "model.type_vocab_size": 2,
    "model.activation": "gelu",
    "data.tokenizer": "wordpiece",
    "data.vocab_size": 200,
    "train.max_steps": 40,
    "train.eval_interval": 20,
}


def test_masked_pretraining_learns(tiny_config):
    cfg = tiny_config(**ENCODER)
    result = pretrain(cfg, progress=False, log=lambda m: None)
    log = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r["loss"] for r in log if r["event"] == "train")
    # an untrained model is near uniform over the vocabulary; the repetitive corpus is easy
    assert first > 0.8 * math.log(cfg.data.vocab_size)
    assert result["valid_loss_nats_per_token"] < 0.8 * first
    assert result["valid_bits_per_byte"] is None
    assert result["sample"].count("->") == 2  # the fill-mask sample
    # documents are separated by [SEP] in the token stream, as BERT separates segments
    tokenizer = Tokenizer.load(cfg.run_dir)
    stream = np.fromfile(cfg.run_dir / "data" / "train.bin", dtype=np.uint16)
    documents = json.loads((cfg.run_dir / "data" / "train.json").read_text())["documents"]
    assert stream[0] == tokenizer.token_to_id("[SEP]") == tokenizer.separator_id
    assert (stream == tokenizer.separator_id).sum() == documents == 2
    saved = json.loads((cfg.run_dir / "results.json").read_text())
    assert saved["valid_loss_nats_per_token"] == result["valid_loss_nats_per_token"]
    assert main(["evaluate", str(cfg.run_dir)]) == 2  # bits per byte are for causal LMs


def test_masked_evaluation_scores_the_same_positions(tiny_config):
    tokenizer = Tokenizer.train(["the king was good and the night was long"] * 20, "wordpiece", 120)
    objective = masked_objective(tokenizer, tokenizer.vocab_size, seed=3)
    assert isinstance(objective, MaskedLM)
    x = torch.randint(5, tokenizer.vocab_size, (4, 32))
    specials = [tokenizer.token_to_id(s) for s in tokenizer.special_tokens]
    x[:, 0] = specials[0]
    a = objective.corrupt(x, torch.Generator().manual_seed(3))
    b = objective.corrupt(x, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[1][:, 0] == -100).all()  # special tokens are never chosen
    model = torch.nn.Sequential(torch.nn.Embedding(tokenizer.vocab_size, tokenizer.vocab_size))
    batches = [(x, x)]
    first = objective.evaluate(model, batches, torch.device("cpu"))
    assert first == objective.evaluate(model, batches, torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({**ENCODER, "data.tokenizer": "char"}, "needs a \\[MASK\\] token"),
        ({**ENCODER, "model.head": "lm"}, "not model.arch=encoder with model.head=lm"),
    ],
)
def test_wrong_combinations_are_refused(tiny_config, overrides, message):
    cfg = tiny_config(**overrides)
    with pytest.raises(LmforgeError, match=message):
        pretrain(cfg, progress=False, log=lambda m: None)
    assert not cfg.run_dir.exists()
