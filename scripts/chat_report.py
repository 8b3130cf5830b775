"""The chat demo's figures per kind of conversation, for docs/tasks.md.

Usage: .venv/bin/python scripts/chat_report.py DATA.jsonl MODEL_DIR [MODEL_DIR...]
(e.g. data/chat/test.jsonl runs/demo runs/chat/full). For each model: the loss per assistant
token on each kind (teacher-forced, as `lmforge evaluate chat`), and how often its greedy
first answer equals the reference exactly (`lmforge chat --temperature 0` would say the
same), beside the best constant answer of the training set (the baseline to beat). Prints a
table and a final JSON line.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from lmforge.tasks import load_task_model


def main(data: Path, models: list[str]) -> None:
    rows = [json.loads(line) for line in data.open(encoding="utf-8")]
    kinds = sorted({r["kind"] for r in rows})
    train = data.with_name("train.jsonl")
    constant = {}
    if train.is_file():  # the most frequent first answer of each kind in training
        first = defaultdict(Counter)
        for line in train.open(encoding="utf-8"):
            r = json.loads(line)
            first[r["kind"]][_first_answer(r["messages"])] += 1
        for kind in kinds:
            answer = first[kind].most_common(1)[0][0]
            hits = [_first_answer(r["messages"]) == answer for r in rows if r["kind"] == kind]
            constant[kind] = {"answer": answer, "exact": sum(hits) / len(hits)}
    report = {"data": str(data), "constant": constant, "models": {}}
    for directory in models:
        task, model = load_task_model("chat", directory)
        figures = {}
        for kind in kinds:
            chosen = [r for r in rows if r["kind"] == kind]
            records = [{"messages": r["messages"]} for r in chosen]
            scored = task.score(task.predict(model, records), records)
            exact = 0
            for r in chosen:
                turns = r["messages"]
                ask = turns[: next(i for i, m in enumerate(turns) if m["role"] == "assistant")]
                exact += task.reply(model, ask, max_new_tokens=32) == _first_answer(turns)
            figures[kind] = {"loss": scored["assistant_loss"], "exact": exact / len(chosen)}
        report["models"][directory] = figures
    print(f"{'kind':<14}" + "".join(f"{m:>26}" for m in models) + f"{'constant answer':>18}")
    for kind in kinds:
        got = [report["models"][m][kind] for m in models]
        cells = "".join(f"{g['loss']:>12.3f} {g['exact']:>10.1%}   " for g in got)
        base = constant.get(kind, {}).get("exact")
        print(f"{kind:<14}{cells}{'' if base is None else f'{base:>15.1%}'}")
    print("(each model: loss per assistant token, exact first answers)")
    print(json.dumps(report))


def _first_answer(messages: list[dict]) -> str:
    return next(m["content"] for m in messages if m["role"] == "assistant")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
