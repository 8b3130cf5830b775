"""Chat templates render as transformers renders them; the chat command holds a conversation."""

import io
import json

import pytest

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.infer.chat import DEFAULT_TEMPLATE, load_chat_template, render_chat
from tests.infer.model_dirs import char_model_dir

transformers = pytest.importorskip("transformers")

# A ChatML-style template with a loop, conditionals and whitespace control.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You speak in verse."},
    {"role": "user", "content": "Who is Juliet?"},
    {"role": "assistant", "content": "A Capulet, fair and young."},
    {"role": "user", "content": "And Romeo?"},
]


@pytest.mark.parametrize("template", [CHATML, DEFAULT_TEMPLATE])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rendering_equals_transformers(template, add_generation_prompt):
    ref = _hf_render(template, add_generation_prompt)
    assert render_chat(template, MESSAGES, add_generation_prompt) == ref


def _hf_render(template, add_generation_prompt):
    from tokenizers.models import WordLevel

    from tokenizers import Tokenizer as HFTokenizer

    backend = HFTokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=backend)
    return hf.apply_chat_template(
        MESSAGES,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def test_template_is_found_where_hugging_face_keeps_it(tmp_path):
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}))
    assert load_chat_template(tmp_path) == CHATML
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert load_chat_template(tmp_path) == "{{ messages[0]['content'] }}"
    with pytest.raises(LmforgeError, match="chat template failed"):
        render_chat("{{ raise_exception('no system role') }}", MESSAGES)


def test_chat_command_holds_a_conversation(tmp_path, monkeypatch, capsys):
    char_model_dir(tmp_path, ["USER: hello\n\nASSISTANT: good day to you, sir"] * 3, 64)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nhello again\n/exit\n"))
    code = main(["chat", str(tmp_path), "--max-new-tokens", "8", "--seed", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("model> ") == 2 and "(conversation reset)" in out


def test_bench_generate_times_each_precision(tmp_path, capsys):
    char_model_dir(tmp_path, ["to be or not to be"])
    args = ["bench-generate", str(tmp_path), "--prompt-tokens", "8", "--new-tokens", "4"]
    assert main([*args, "--precision", "fp32", "--precision", "int8"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["precision"] for r in report["results"]] == ["fp32", "int8"]
    assert all(r["decode_tok_s"] > 0 and r["prefill_s"] > 0 for r in report["results"])
    assert main(["bench-generate", str(tmp_path), "--new-tokens", "40"]) == 2  # > context
