"""Instruction tuning (`lmforge finetune chat`): the assistant mask against transformers' own
and against a hand count, the records' checks, and fine-tuning a tiny GPT (full and LoRA)
into a model that `lmforge chat` talks with, turn by turn."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.infer.chat import TEMPLATE_FILE, load_chat_template, render_chat
from lmforge.models.io import read_config_json
from lmforge.tasks import get_task, load_task_model
from lmforge.tasks.chat import END_OF_TEXT, Chat, assistant_mask, default_template, messages
from lmforge.tasks.finetune import finetune
from lmforge.tokenizers import Tokenizer
from lmforge.train.losses import IGNORE
from tests.tasks.conftest import make_base, write_jsonl

EOT = END_OF_TEXT
FAST = {"train.batch_size": 8, "train.device": "cpu", "train.precision": "fp32"}


def say(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [say("user", "hello"), say("assistant", "hello there.")],
    [
        say("system", "Be brief."),
        say("user", "who says hello?"),
        say("assistant", "ROMEO"),
        say("user", "and then?"),
        say("assistant", " the food was good.  "),  # spaces at both ends stay its own
    ],
    [say("user", "¿Qué? — the king was vile"), say("assistant", "no, the king was fine")],
]

# The same layout with transformers' generation markers around what the assistant says:
# the independent reference for which tokens the loss counts.
GENERATION_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|endoftext|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|endoftext|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|endoftext|>' + message['role'] + '\\n' + message['content'] + '<|endoftext|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|endoftext|>assistant\\n' }}{%- endif -%}"
)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("chat"), "gpt2", "bpe", "decoder")


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_mask_equals_transformers_assistant_tokens_mask(decoder, conversation):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(decoder / "tokenizer.json"))
    template = default_template()
    # the two templates render the same text, and ours as transformers renders it
    ours = render_chat(template, conversation, add_generation_prompt=False)
    assert ours == hf.apply_chat_template(conversation, chat_template=template, tokenize=False)
    assert ours == hf.apply_chat_template(
        conversation, chat_template=GENERATION_TEMPLATE, tokenize=False
    )
    reference = hf.apply_chat_template(
        conversation,
        chat_template=GENERATION_TEMPLATE,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = assistant_mask(Tokenizer.load(decoder), template, conversation)
    assert ids == reference["input_ids"]
    assert mask == reference["assistant_masks"]
    assert sum(mask) > 0 and mask[-2:] == [1, 0]  # the end token counts, the newline not


def test_mask_by_hand_on_characters():
    tok = Tokenizer.train(["abcdefghijklmnopqrstuvwxyz ,.?\n"], "char")
    conversation = [
        say("system", "s"),
        say("user", "hi"),
        say("assistant", "yo."),
        say("user", "?"),
    ]
    conversation.append(say("assistant", "ok"))
    ids, mask = assistant_mask(tok, default_template(), conversation)
    tokens = [tok.id_to_token(i) for i in ids]
    # every character is a token and the marker one token: count the assistant ones by hand
    assert "".join(t for t, m in zip(tokens, mask, strict=True) if m) == f"yo.{EOT}ok{EOT}"
    said = [i for i, m in enumerate(mask) if m]
    before = f"{EOT}system\ns{EOT}\n{EOT}user\nhi{EOT}\n{EOT}assistant\n"
    n = len(before.replace(EOT, "#"))  # one token per character, one for each marker
    assert said[:4] == [n, n + 1, n + 2, n + 3]  # y o . EOT, in place


def test_examples_learn_assistant_tokens_only_and_fit_the_context(decoder):
    task, _ = load_task_model("chat", decoder)
    conversation = [say("system", "x"), say("user", "hi"), say("assistant", "yo")]
    conversation += [say("user", "and?"), say("assistant", "ok")]
    ids, mask = assistant_mask(task.tokenizer, task.template, conversation)
    assert len(ids) <= task.max_length + 1  # fits: nothing cut
    [example] = task.examples([{"messages": conversation}])
    assert example["input_ids"] == ids[:-1]
    assert example["labels"] == [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])]
    # cut just after the first assistant token: that one label stays, the rest is gone
    first = mask.index(1)
    short = Chat(task.tokenizer, task.config, {**task.settings, "max_length": first})
    wordy = [say("user", "hello " * 40), say("assistant", "yes")]  # its answer lies beyond
    [cut] = short.examples([{"messages": conversation}, {"messages": wordy}])
    assert cut["input_ids"] == ids[:first]
    assert cut["labels"] == [IGNORE] * (first - 1) + [ids[first]]
    with pytest.raises(LmforgeError, match="no assistant token"):
        Chat(task.tokenizer, task.config, {**task.settings, "max_length": first - 1}).examples(
            [{"messages": conversation}]
        )


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ([say("system", "x"), say("user", "hi")], "no assistant turn"),
        ([say("user", "hi"), say("tool", "42"), say("assistant", "ok")], "unknown role 'tool'"),
        ("hello", "JSON list"),
        ({"role": "user"}, "list"),
        ([say("user", "hi"), {"role": "assistant"}], "message 2"),
        ([say("user", "hi"), say("assistant", "  ")], "non-empty"),
    ],
)
def test_bad_conversations_are_refused(value, pattern):
    with pytest.raises(LmforgeError, match=pattern):
        messages(value, "t.jsonl:1: field 'messages'")


def test_a_template_that_does_not_append_turns_is_refused(decoder):
    reversed_template = "{% for m in messages | reverse %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(LmforgeError, match="turn by turn"):
        assistant_mask(Tokenizer.load(decoder), reversed_template, CONVERSATIONS[1])


def test_an_encoder_is_refused(tmp_path):
    base = make_base(tmp_path, "bert", "wordpiece", "encoder")
    records = write_jsonl(tmp_path / "t.jsonl", [{"messages": CONVERSATIONS[0]}] * 4)
    with pytest.raises(LmforgeError, match="decoder-only"):
        finetune("chat", base, records, tmp_path / "out", progress=False, log=lambda s: None)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- fine-tuning


REPLIES = {"ping": "pong.", "hello": "the king was good.", "who says hello?": "ROMEO."}


def replies(n: int, seed: int) -> list[dict]:
    """One to three turns of fixed replies, a task a tiny model learns in a few dozen steps."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        talk = []
        for ask in rng.sample(list(REPLIES), rng.randint(1, 3)):
            talk += [say("user", ask), say("assistant", REPLIES[ask])]
        out.append({"messages": talk})
    return out


@pytest.fixture(scope="module")
def tuned(decoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    train = write_jsonl(root / "train.jsonl", replies(64, 0))
    valid = write_jsonl(root / "valid.jsonl", replies(16, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread (the autouse fixture is per test)
    out = {}
    for method, lr in (("full", 3e-3), ("lora", 1e-2)):
        out[method] = root / method
        summary = finetune(
            "chat",
            decoder,
            train,
            out[method],
            valid,
            method=method,
            epochs=10,
            overrides={**FAST, "train.learning_rate": lr},
            progress=False,
            log=lambda s: None,
        )
        out[f"{method}-summary"] = summary
    out["valid"] = valid
    torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetuning_lowers_the_assistant_loss_and_keeps_the_template(decoder, tuned, method):
    records = Chat.read(tuned["valid"])
    task, base = load_task_model("chat", decoder)  # the base, scored as it is
    before = task.score(task.predict(base, records), records)
    after = tuned[f"{method}-summary"]["valid"]
    assert before["token_accuracy"] < 0.1 and after["token_accuracy"] > 0.4, (before, after)
    # LoRA on a random base cannot sharpen its frozen, tied output layer: the loss falls less
    drop = 0.5 if method == "full" else 0.97
    assert after["assistant_loss"] < drop * before["assistant_loss"], (before, after)
    assert after["assistant_tokens"] == before["assistant_tokens"] > 0
    directory = tuned[method]
    assert load_chat_template(directory) == default_template()
    assert read_config_json(directory)["task"]["chat_template"] == default_template()
    if method == "lora":
        assert (directory / "adapter" / "adapter_config.json").is_file()
    again, model = load_task_model("chat", directory)
    rescored = again.score(again.predict(model, records), records)
    assert rescored["assistant_loss"] == pytest.approx(after["assistant_loss"], rel=1e-5)


def test_chat_command_answers_in_turns(tuned, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("who says hello?\nping\n/exit\n"))
    assert main(["chat", str(tuned["full"]), "--max-new-tokens", "12", "--temperature", "0"]) == 0
    replies = [line for line in capsys.readouterr().out.splitlines() if "model>" in line]
    # each answer is its own turn: it stops at the end-of-turn token, before the next prompt
    assert [r.split("model>")[-1].strip() for r in replies] == ["ROMEO.", "pong."]


def test_pipeline_replies_as_the_chat_command_does(tuned):
    import lmforge

    chat = lmforge.pipeline("chat", model=tuned["full"])
    assert chat("ping") == {"role": "assistant", "content": "pong."}
    talk = [say("user", "ping"), say("assistant", "pong."), say("user", "who says hello?")]
    assert chat(talk)["content"] == "ROMEO."
    with pytest.raises(LmforgeError, match="unknown role"):
        chat([say("robot", "ping")])


def test_the_template_a_base_has_is_kept(decoder, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(decoder, base)
    own = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|endoftext|>{% endfor %}"
    (base / TEMPLATE_FILE).write_text(own)
    settings = get_task("chat").adopt_base(base, {"task": "chat"})
    assert settings["chat_template"] == own


def test_a_tokenizer_without_an_end_token_needs_a_template(tmp_path):
    from tests.tasks.conftest import TEXT

    base = make_base(tmp_path, "gpt2", "bpe", "plain")
    Tokenizer.train([TEXT], "bpe", 300, special_tokens=[]).save(base)  # no <|endoftext|>
    with pytest.raises(LmforgeError, match="no chat template"):
        Chat.adopt_base(base, {"task": "chat"})


@pytest.mark.parametrize("preset", ["gpt2", "llama"])
def test_packed_conversations_score_as_they_would_alone(tmp_path, preset):
    """Packing: several conversations in one row, each seeing only itself from position 0,
    give the loss of the same conversations one per padded row."""
    base = make_base(
        tmp_path, preset, "bpe", preset, **({"n_kv_head": 1} if preset == "llama" else {})
    )
    task, model = load_task_model("chat", base)
    talks = [CONVERSATIONS[0], [say("user", "hi"), say("assistant", "ROMEO")]] * 3
    examples = task.examples([{"messages": t} for t in talks])
    packed, padded = task.collate(examples), task.padded(examples)
    assert len(packed["input_ids"]) < len(examples)  # rows hold several conversations
    assert (packed["labels"] != IGNORE).sum() == (padded["labels"] != IGNORE).sum()

    def answer_logits(batch):  # the logits that predict assistant tokens, in order
        logits = model(
            batch["input_ids"], batch["attention_mask"], positions=batch.get("positions")
        )
        return logits[batch["labels"] != IGNORE]

    alone = answer_logits(padded)
    torch.testing.assert_close(answer_logits(packed), alone, atol=1e-5, rtol=1e-5)
    assert task.loss(model, packed).item() == pytest.approx(
        task.loss(model, padded).item(), rel=1e-5
    )
    # without the block mask and restarted positions, the packed rows would be read otherwise
    crossed = {**packed, "attention_mask": torch.ones_like(packed["input_ids"]), "positions": None}
    assert not torch.allclose(answer_logits(crossed), alone, atol=1e-4)


def test_padding_does_not_change_the_loss(decoder):
    """Padding: a conversation scores the same alone and beside a longer one."""
    task, model = load_task_model("chat", decoder)
    torch.manual_seed(0)
    records = [{"messages": CONVERSATIONS[0]}, {"messages": CONVERSATIONS[1]}]
    alone = task.predict(model, records[:1])[0]["nll"]
    together = task.predict(model, records)[0]["nll"]
    assert together == pytest.approx(alone, rel=1e-5)


# --------------------------------------------------------------------- the demo set


def test_demo_conversations_are_well_formed_and_answered_from_the_text(tmp_path):
    from lmforge.tasks.shakespeare import (
        KINDS_OF_PLAY,
        make_dataset,
        modernize,
        speeches,
        split_plays,
    )

    counts = make_dataset("chat", tmp_path, per_play=8)
    plays = {d.source: d for split in split_plays().values() for d in split}
    seen = {}
    for split in counts:
        records = Chat.read(tmp_path / f"{split}.jsonl")  # every conversation passes the checks
        raw = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").open()]
        seen[split] = {r["play"] for r in raw}
        assert {r["kind"] for r in raw} == {"next-speaker", "continue", "kind-of-play", "modernize"}
        for rec, row in zip(records, raw, strict=True):
            assert all("\n" not in m["content"] for m in rec["messages"])  # one line each
            talk = [m for m in rec["messages"] if m["role"] != "system"]
            ask, answer = talk[0]["content"], talk[1]["content"]
            doc = plays[row["play"]]
            scenes = speeches(doc)
            if row["kind"] == "modernize":
                line = ask.removeprefix("Modernize this line: ")
                assert answer == modernize(line) != line
            elif row["kind"] == "kind-of-play":
                assert answer == KINDS_OF_PLAY[doc.genre]
            elif row["kind"] == "continue":  # the speech's next line, by its own speaker
                name, first = re.fullmatch(r"Continue .* style of ([^:]*): (.*)", ask).groups()
                assert [name, first, answer] in [[n, *lines[:2]] for s in scenes for n, lines in s]
            else:  # the speaker of the next speech, and its first line
                speaker, quoted = re.fullmatch(r'([^:]*): "(.*)" Who speaks next\?', ask).groups()
                follow = talk[3]["content"] if len(talk) == 4 else None
                assert any(
                    speaker == before
                    and " / ".join(lines).endswith(quoted)
                    and answer == f"{name}."
                    and follow in (None, said[0])
                    for scene in scenes
                    for (before, lines), (name, said) in zip(scene, scene[1:])
                )
    assert not seen["train"] & seen["valid"] and not seen["train"] & seen["test"]
