"""Task data: JSON-lines or CSV records, with the user's field names mapped to the task's roles.

Every task names the roles it reads (classification: text, label; QA: context, question,
answers; ...). `fields` renames them to the file's keys, e.g. {"text": "review"}. Reading
checks each record and stops at the first bad one, naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import LmforgeError


def parse_fields(pairs: list[str] | None) -> dict[str, str]:
    """['text=review', 'label=stars'] -> {'text': 'review', 'label': 'stars'}"""
    out = {}
    for pair in pairs or []:
        role, sep, name = pair.partition("=")
        if not sep or not role or not name:
            raise LmforgeError(f"--field {pair!r}: write ROLE=NAME, e.g. --field text=review")
        out[role.strip()] = name.strip()
    return out


def _rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of a .jsonl/.json-lines or .csv/.tsv file."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise LmforgeError(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{path} is not UTF-8 text (byte {e.start}); convert it") from None
    if path.suffix in {".csv", ".tsv"}:
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
        return [(reader.line_num, row) for row in reader]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise LmforgeError(f"{path}:{number}: not a JSON object ({e})") from None
        if not isinstance(record, dict):
            raise LmforgeError(f"{path}:{number}: a record must be a JSON object")
        rows.append((number, record))
    return rows


def read_records(
    path: str | Path,
    roles: dict[str, Callable[[object, str], object]],
    fields: dict[str, str] | None = None,
    optional: tuple[str, ...] = (),
) -> list[dict]:
    """Records of `path` keyed by role. `roles` maps each role to a checker `(value, where)
    -> value` that raises LmforgeError naming `where`; `optional` roles may be absent."""
    path = Path(path)
    fields = fields or {}
    unknown = sorted(set(fields) - set(roles))
    if unknown:
        raise LmforgeError(
            f"unknown field role(s) {', '.join(unknown)}; this task reads {', '.join(roles)}"
        )
    rows = _rows(path)
    if not rows:
        raise LmforgeError(f"{path} has no records")
    records = []
    for number, row in rows:
        record = {}
        for role, check in roles.items():
            key = fields.get(role, role)
            where = f"{path}:{number}: field '{key}'"
            if key not in row or row[key] is None:
                if role in optional:
                    continue
                hint = f" (set it with --field {role}=NAME)" if key == role else ""
                raise LmforgeError(
                    f"{path}:{number}: no field '{key}'{hint}; the record has "
                    f"{', '.join(map(repr, row)) or 'no fields'}"
                )
            record[role] = check(row[key], where)
        record["_where"] = f"{path}:{number}"
        records.append(record)
    return records


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise LmforgeError(f"{where} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise LmforgeError(f"{where} is empty")
    return value


def label(value: object, where: str) -> str:
    """Labels are kept as strings ('1' and 1 are the same class)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LmforgeError(f"{where} must be a string or an integer label")
    value = str(value).strip()
    if not value:
        raise LmforgeError(f"{where} is empty")
    return value


def answers(value: object, where: str) -> list[dict]:
    """SQuAD's {"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"}."""
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value)
        except ValueError:
            raise LmforgeError(f"{where} must be JSON answers, got {value[:40]!r}") from None
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise LmforgeError(f"{where} needs equal lists 'text' and 'answer_start'")
        value = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    if not isinstance(value, list) or not value:
        raise LmforgeError(f"{where} must hold at least one answer")
    out = []
    for answer in value:
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise LmforgeError(f"{where}: each answer needs 'text' and 'answer_start'")
        start = answer.get("answer_start")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise LmforgeError(f"{where}: answer_start must be a character index >= 0")
        out.append({"text": answer["text"], "answer_start": start})
    return out
