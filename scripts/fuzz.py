"""Coverage-guided fuzzing of one file reader with atheris, for longer runs than the suite's.

    .venv/bin/pip install atheris
    .venv/bin/python scripts/fuzz.py tokenizer_json -atheris_runs=20000
    .venv/bin/python scripts/fuzz.py --list

The targets are those of scripts/fuzz_targets.py (the suite's hypothesis tests use the same):
a reader may accept the input or refuse it with LmforgeError; any other exception is a crash,
which atheris reports with the input that caused it (saved as crash-*). The corpus starts
from a valid file of the target's format.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.fuzz_targets import TARGETS, seed_files  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] == "--list":
        print("targets:", ", ".join(sorted(TARGETS)))
        return 0
    name, rest = sys.argv[1], sys.argv[2:]
    if name not in TARGETS:
        print(f"unknown target {name!r}; one of {', '.join(sorted(TARGETS))}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    target = TARGETS[name]
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    corpus = folder / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(seed_files()[name])
    work = folder / "work"
    work.mkdir()

    def one_input(data: bytes) -> None:
        target(data, work)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *rest, str(corpus)], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
