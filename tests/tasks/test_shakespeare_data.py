"""The demo datasets: split by play, and every answer checkable from its own record."""

import json
import re

import pytest

from lmforge.tasks import get_task
from lmforge.tasks.shakespeare import DATASETS, make_dataset, modernize
from lmforge.text.shakespeare import VALID_PLAYS


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = {}
    for name in DATASETS:
        counts = make_dataset(name, root / name, per_play=4)
        out[name] = {
            split: [json.loads(line) for line in (root / name / f"{split}.jsonl").open()]
            for split in counts
        }
        assert all(counts[s] == len(out[name][s]) > 0 for s in counts)
    return out, root


def test_splits_are_by_play(datasets):
    data, _ = datasets
    for name in DATASETS:
        plays = {split: {r["play"] for r in records} for split, records in data[name].items()}
        assert plays["test"] == set(VALID_PLAYS)
        assert not plays["train"] & plays["valid"] and not plays["train"] & plays["test"]
        assert not plays["valid"] & plays["test"]


def test_genre_labels_cover_the_six_groups(datasets):
    data, _ = datasets
    assert {r["label"] for r in data["genre"]["test"]} == {
        "comedies",
        "histories",
        "problems",
        "roman",
        "romances",
        "tragedies",
    }


def test_speaker_answers_are_spans_heading_the_line(datasets):
    data, root = datasets
    qa = get_task("qa")
    records = qa.read(root / "speaker-qa" / "train.jsonl")
    qa.check_answers(records)  # every answer is at its answer_start
    for rec in records:
        [answer] = rec["answers"]
        line = re.fullmatch(r"Who says: '(.*)'\?", rec["question"]).group(1)
        speech = rec["context"][answer["answer_start"] :].split("\n\n")[0]
        assert speech.startswith(answer["text"] + ":\n") and line in speech.split("\n")


def test_modernize_and_speakers_are_exact(datasets):
    data, _ = datasets
    assert modernize("Thou art; 'Tis thine, nay, thee.") == "You are; It is your, no, you."
    assert modernize("artful hathaway") == "artful hathaway"  # whole words only
    for rec in data["modernize"]["test"]:
        assert rec["target"] == modernize(rec["source"]) != rec["source"]
    for rec in data["speakers"]["train"]:
        headers = [speech.split(":\n")[0] for speech in rec["document"].split("\n\n")]
        assert rec["summary"].split("\n") == list(dict.fromkeys(headers))
