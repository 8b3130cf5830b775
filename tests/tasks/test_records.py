import pytest

from lmforge.errors import LmforgeError
from lmforge.tasks import get_task
from lmforge.tasks.records import parse_fields
from tests.tasks.conftest import write_jsonl

Classification = get_task("classification")
QA = get_task("qa")


def test_field_names_map_to_roles(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"review": "fine play", "stars": 5}])
    [record] = Classification.read(path, parse_fields(["text=review", "label=stars"]))
    assert (record["text"], record["label"]) == ("fine play", "5")


def test_csv_and_pairs(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,text_b,label\n"a, b",c,yes\nd,e,no\n', "utf-8")
    records = Classification.read(path)
    assert [(r["text"], r["text_b"], r["label"]) for r in records] == [
        ("a, b", "c", "yes"),
        ("d", "e", "no"),
    ]


@pytest.mark.parametrize(
    "record, fields, message",
    [
        ({"txt": "a", "label": "x"}, None, r"d.jsonl:1: no field 'text' \(set it with --field"),
        ({"review": "a", "label": "x"}, ["text=body"], r"d.jsonl:1: no field 'body'"),
        ({"text": "  ", "label": "x"}, None, r"d.jsonl:1: field 'text' is empty"),
        ({"text": "a", "label": None}, None, r"d.jsonl:1: no field 'label'"),
        ({"text": ["a"], "label": "x"}, None, r"field 'text' must be a string"),
    ],
)
def test_bad_records_name_the_line_and_field(tmp_path, record, fields, message):
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    with pytest.raises(LmforgeError, match=message):
        Classification.read(path, parse_fields(fields))


def test_file_problems(tmp_path):
    with pytest.raises(LmforgeError, match="not found"):
        Classification.read(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "x"}\n')
    with pytest.raises(LmforgeError, match="not UTF-8"):
        Classification.read(tmp_path / "latin1.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", "utf-8")
    with pytest.raises(LmforgeError, match="has no records"):
        Classification.read(tmp_path / "empty.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n', "utf-8")
    with pytest.raises(LmforgeError, match="broken.jsonl:2: not a JSON object"):
        Classification.read(tmp_path / "broken.jsonl")
    with pytest.raises(LmforgeError, match="unknown field role"):
        Classification.read(tmp_path / "broken.jsonl", {"txet": "a"})
    with pytest.raises(LmforgeError, match="ROLE=NAME"):
        parse_fields(["text"])


def test_answers_in_both_layouts(tmp_path):
    squad = {"text": ["Romeo"], "answer_start": [0]}
    listed = [{"text": "Romeo", "answer_start": 0}]
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [{"context": "Romeo speaks", "question": "who?", "answers": a} for a in (squad, listed)],
    )
    first, second = QA.read(path)
    assert first["answers"] == second["answers"] == listed


def test_answer_that_is_not_a_span_is_refused(tmp_path):
    answers = [{"text": "Juliet", "answer_start": 0}]
    rec = {"context": "Romeo speaks", "question": "who?", "answers": answers}
    path = write_jsonl(tmp_path / "qa.jsonl", [rec])
    records = QA.read(path)
    with pytest.raises(LmforgeError, match=r"qa.jsonl:1: answer 'Juliet' is not a span"):
        QA.check_answers(records)
