"""Fuzzing the readers of files that come from outside: each gets arbitrary bytes and
mutations of a valid file, and must either read it or raise LmforgeError (which the CLI turns
into one line and exit 2). Any other exception is a bug. Bounded here (a few hundred examples
in all); `scripts/fuzz.py` runs the same targets under atheris for as long as one likes."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripts.fuzz_targets import TARGETS, seed_files

SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def mutate(data: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, length to drop, bytes to insert) edits to `data`."""
    out = bytearray(data)
    for pos, drop, insert in cuts:
        pos = pos % (len(out) + 1)
        out[pos : pos + drop] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 16), st.binary(max_size=8)), max_size=6
)


@pytest.mark.parametrize("name", sorted(TARGETS))
@SETTINGS
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_a_reader(name, data, tmp_path_factory):
    TARGETS[name](data, tmp_path_factory.mktemp(name))


@pytest.mark.parametrize("name", sorted(TARGETS))
@SETTINGS
@given(cuts=edits)
def test_mutated_valid_files_never_crash_a_reader(name, cuts, tmp_path_factory):
    seed = seed_files()[name]
    TARGETS[name](mutate(seed, cuts), tmp_path_factory.mktemp(name))


def test_the_valid_seeds_are_read():
    """Each seed is a file its reader accepts, so the mutations start from real input."""
    for name, data in seed_files().items():
        assert TARGETS[name](data, None, strict=True) is not None, name
