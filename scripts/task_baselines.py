"""The rule baselines docs/tasks.md compares the demos with, on the same test records.

Usage: .venv/bin/python scripts/task_baselines.py [DATA_DIR]   (default runs/tasks/data, as
scripts/task_demos.sh writes it). Prints one JSON line per demo.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import sacrebleu
from rouge_score import rouge_scorer

from lmforge.tasks.qa import squad_metrics


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def main(root: Path) -> None:
    genre = read(root / "genre" / "test.jsonl")
    train = Counter(r["label"] for r in read(root / "genre" / "train.jsonl"))
    majority = train.most_common(1)[0][0]
    share = sum(r["label"] == majority for r in genre) / len(genre)
    print(json.dumps({"genre": {"majority_label": majority, "accuracy": share}}))

    qa = read(root / "speaker-qa" / "test.jsonl")
    first = [r["context"].split(":\n")[0] for r in qa]
    golds = [r["answers"]["text"] for r in qa]
    print(json.dumps({"speaker-qa": {"first_speaker": squad_metrics(first, golds)}}))

    mt = read(root / "modernize" / "test.jsonl")
    sources, targets = [r["source"] for r in mt], [r["target"] for r in mt]
    copy = {
        "bleu": sacrebleu.corpus_bleu(sources, [targets]).score,
        "chrf": sacrebleu.corpus_chrf(sources, [targets]).score,
        "exact_match": 100 * sum(s == t for s, t in zip(sources, targets)) / len(mt),
    }
    print(json.dumps({"modernize": {"copy_source": copy}}))

    summ = read(root / "speakers" / "test.jsonl")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    guesses = [r["document"].split(":\n")[0] for r in summ]
    scores = [scorer.score(r["summary"], g) for r, g in zip(summ, guesses)]
    first_only = {k: 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in scores[0]}
    first_only["exact_match"] = (
        100 * sum(r["summary"] == g for r, g in zip(summ, guesses)) / len(summ)
    )
    print(json.dumps({"speakers": {"first_speaker": first_only}}))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tasks/data"))
