import json

import pytest

from lmforge.errors import LmforgeError
from lmforge.text import load_corpus, read_documents
from lmforge.text.corpus import split_documents


def test_txt_jsonl_directory_and_glob(tmp_path):
    (tmp_path / "a.txt").write_text("alpha text\n", "utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.jsonl").write_text(
        json.dumps({"body": "beta"}) + "\n\n" + json.dumps({"body": "gamma"}) + "\n", "utf-8"
    )
    (sub / "ignored.csv").write_text("x,y\n", "utf-8")
    docs = read_documents([str(tmp_path)], text_field="body")
    assert [d.text for d in docs] == ["alpha text\n", "beta", "gamma"]
    assert docs[2].source.endswith("b.jsonl:3")
    globbed = read_documents([str(tmp_path / "**" / "*.jsonl")], text_field="body")
    assert [d.text for d in globbed] == ["beta", "gamma"]


def test_invalid_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good start \xff\xfe rest")
    with pytest.raises(LmforgeError) as e:
        read_documents([str(bad)])
    assert "bad.txt" in str(e.value) and "byte 11" in str(e.value)
    assert "invalid_utf8=replace" in str(e.value) and "--invalid-utf8 replace" in str(e.value)
    (doc,) = read_documents([str(bad)], invalid_utf8="replace")
    assert doc.text == "good start \ufffd\ufffd rest"


def test_jsonl_missing_field_names_line_and_fields(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n{"content": "no"}\n', "utf-8")
    with pytest.raises(LmforgeError, match=r"d.jsonl:2: no 'text' field \(found: content\)"):
        read_documents([str(f)])


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    f = tmp_path / "d.jsonl"
    texts = ["one\u2028two\x0cthree\x85four", "second"]
    f.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), "utf-8")
    assert [d.text for d in read_documents([str(f)])] == texts


def test_jsonl_unpaired_surrogate(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok \\ud800 here"}\n', "utf-8")
    with pytest.raises(LmforgeError, match="d.jsonl:1: .*unpaired surrogate at character 3"):
        read_documents([str(f)])
    (doc,) = read_documents([str(f)], invalid_utf8="replace")
    assert doc.text == "ok ? here"


def test_jsonl_bad_json(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n{oops\n', "utf-8")
    with pytest.raises(LmforgeError, match="d.jsonl:2: not valid JSON"):
        read_documents([str(f)])


@pytest.mark.parametrize("content", ["", "   \n\n"])
def test_empty_corpus(tmp_path, content):
    f = tmp_path / "empty.txt"
    f.write_text(content, "utf-8")
    with pytest.raises(LmforgeError, match="holds no text"):
        read_documents([str(f)])


def test_missing_and_unmatched(tmp_path):
    with pytest.raises(LmforgeError, match="not found"):
        read_documents([str(tmp_path / "nope.txt")])
    with pytest.raises(LmforgeError, match="no .txt or .jsonl files match"):
        read_documents([str(tmp_path / "*.txt")])
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(LmforgeError, match="unsupported file type"):
        read_documents([str(tmp_path / "x.csv")])


def test_split_holds_out_whole_documents(corpus_dir):
    train, valid = load_corpus([str(corpus_dir)], valid_fraction=0.34)
    assert len(train) == 2 and len(valid) == 1
    assert {d.source for d in train}.isdisjoint({d.source for d in valid})


def test_single_document_split_at_a_line(tmp_path):
    from lmforge.text import Document

    text = "".join(f"line {i}\n" for i in range(100))
    train, valid = split_documents([Document(text, "one")], 0.1)
    assert train[0].text + valid[0].text == text
    assert train[0].text.endswith("\n") and 8 <= valid[0].text.count("\n") <= 11


def test_builtin_corpus_cannot_mix_with_files(corpus_dir):
    with pytest.raises(LmforgeError, match="cannot be mixed"):
        load_corpus(["shakespeare", str(corpus_dir)])
