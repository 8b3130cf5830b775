"""The pipeline end to end on a dirty corpus made here, through the library and the CLI:
what each step removes, the report, the pool, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.text.clean.pipeline import clean, load_recipe, recipe_names

VOCAB = [f"w{i}" for i in range(3000)]
STOP = ["the", "and", "of", "to", "with", "that"]


def article(rng: random.Random, n: int = 200) -> str:
    words = [rng.choice(VOCAB) if i % 4 else rng.choice(STOP) for i in range(n)]
    lines = [" ".join(words[i : i + 100]) + "." for i in range(0, n, 100)]
    return "\n".join(lines)


def dirty_corpus(folder, rng=None):
    """20 articles, then: 3 exact copies, 3 lightly edited copies, 2 junk pages, one with
    PII, and a cookie banner on every page."""
    rng = rng or random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = [article(rng) for _ in range(20)]
    banner = "This website uses cookies to improve your experience, accept or read our policy."
    docs = [b + "\n" + banner for b in base]
    docs += docs[:3]  # exact copies
    for b in base[3:6]:
        words = b.split(" ")
        words[50] = words[150] = "changed"  # one word in each line
        docs.append(" ".join(words))
    docs += ["buy now " * 3, "# # # # #\n" * 80]
    docs.append(
        base[10].replace("w", "v") + "\nMail me at jane.doe@example.com or 4111 1111 1111 1111."
    )
    path = folder / "web.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), "utf-8")
    return path, len(docs)


def read_out(folder):
    return [json.loads(x) for f in sorted(folder.glob("shard-*.jsonl")) for x in open(f)]


def test_default_recipe_removes_what_it_should(tmp_path):
    path, n = dirty_corpus(tmp_path / "in")
    report = clean([str(path)], "default", tmp_path / "out", workers=1, progress=False)
    steps = {s["step"]: s for s in report["steps"]}
    assert report["docs_in"] == n
    assert steps["exact_dedup"]["removed"] == {"exact_duplicate": 3}
    assert steps["span_dedup"]["counts"]["repeated_lines"] == 19  # the banner after page one
    assert steps["gopher_quality"]["removed"] == {"gopher_min_words": 2}
    assert steps["near_dedup"]["removed"] == {"near_duplicate": 3}
    assert steps["pii"]["counts"] == {"pii_credit_card": 1, "pii_email": 1}
    out = read_out(tmp_path / "out")
    assert len(out) == report["docs_out"] == n - 3 - 2 - 3
    text = "\n".join(d["text"] for d in out)
    assert "jane.doe" not in text and "<EMAIL>" in text and "<CREDIT_CARD>" in text
    assert text.count("uses cookies") == 1
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["steps"][1]["examples"]["exact_duplicate"][0]["source"].endswith(":21")
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "gopher_min_words" in (tmp_path / "out" / "report.html").read_text()
    assert not list((tmp_path / "out").glob(".spill*"))


def test_pool_gives_the_same_output_as_one_process(tmp_path):
    path, _ = dirty_corpus(tmp_path / "in")
    clean([str(path)], "web", tmp_path / "one", workers=1, progress=False)
    clean([str(path)], "web", tmp_path / "two", workers=2, progress=False)
    assert read_out(tmp_path / "one") == read_out(tmp_path / "two")


def test_recipes_ship_and_validate(tmp_path):
    assert {"default", "web"} <= set(recipe_names())
    for name in recipe_names():
        assert load_recipe(name)[1]
    bad = tmp_path / "r.yaml"
    bad.write_text("steps:\n  - shuffle: {}\n")
    with pytest.raises(LmforgeError, match="unknown cleaning step 'shuffle'"):
        load_recipe(str(bad))
    bad.write_text("steps:\n  - near_dedup: {treshold: 0.5}\n")
    with pytest.raises(LmforgeError, match="near_dedup"):
        clean(["x"], str(bad), tmp_path / "o")
    with pytest.raises(LmforgeError, match="unknown recipe"):
        load_recipe("nope")


def test_cli_clean_and_single_steps(tmp_path, capsys):
    path, n = dirty_corpus(tmp_path / "in")
    assert main(["data", "clean", str(path), "--output", str(tmp_path / "o"), "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    assert "near_duplicate 3" in capsys.readouterr().out
    assert main(["data", "pii", str(path), "--output", str(tmp_path / "p"), "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    assert len(read_out(tmp_path / "p")) == n
    ev = tmp_path / "eval.txt"
    ev.write_text(" ".join(json.loads(path.read_text().split("\n")[10])["text"].split()[:30]))
    assert main(["data", "decontaminate", str(path), "--eval", str(ev), "--output",
                 str(tmp_path / "d"), "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["steps"][0]["removed"] == {"decontaminate_ngram_overlap": 1}
    assert main(["data", "recipes"]) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no documents"),
        (b'{"text": "ok"}\n{"text": "broken\n', "web.jsonl:2: not valid JSON"),
        (b'{"text": "ok"}\n{"body": "x"}\n', "web.jsonl:2: no string field 'text'"),
        (b'{"text": "caf\xe9"}\n', "web.jsonl:1: invalid UTF-8 at byte"),
        (b'{"text": "' + b"a" * (2 << 20) + b'"}\n', "web.jsonl:1: a document over 1 MiB"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, content, message):
    src = tmp_path / "web.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out"
    argv = ["data", "clean", str(src), "--output", str(out), "--workers", "1", "--no-progress",
            "--max-doc-mb", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    assert src.read_bytes() == content  # the input is untouched


def test_invalid_utf8_can_be_replaced(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"caf\xe9 " + b"the word and of text " * 20)
    report = clean([str(src)], {"steps": ["normalize"]}, tmp_path / "o", workers=1,
                   invalid_utf8="replace", progress=False)  # fmt: skip
    assert report["docs_out"] == 1 and "\ufffd" in read_out(tmp_path / "o")[0]["text"]


def test_existing_output_is_refused(tmp_path):
    path, _ = dirty_corpus(tmp_path / "in")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    with pytest.raises(LmforgeError, match="--overwrite"):
        clean([str(path)], "default", tmp_path / "o", workers=1, progress=False)
    assert (tmp_path / "o" / "keep.txt").exists()
