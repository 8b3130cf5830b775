"""Atomic file writes: a reader never sees a half-written file, even after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import LmforgeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself durable
    finally:
        tmp.unlink(missing_ok=True)


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make `dst` name the same file as `src`, replacing any old `dst` in one rename: a hard
    link where the file system has them (no bytes copied), a copy elsewhere. `src` must
    never be rewritten in place (atomic_path replaces files, it does not rewrite them)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside `path` to fill. On success it replaces `path` by renames (an old
    `path` is deleted only once the new one is in place); on any error it is removed, and so
    are the parent folders it had to create: a failed command leaves nothing behind."""
    path = Path(path)
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    staging = path.with_name(f".{path.name}.incomplete")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    old = path.with_name(f".{path.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old, ignore_errors=True)


def check_new_directory(path: str | os.PathLike, overwrite: bool, flag: str = "--overwrite"):
    """Refuse to write into an existing non-empty `path` unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LmforgeError(f"{path} exists and is not a directory; choose another output")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LmforgeError(
            f"{path} already exists and is not empty; pass {flag} to replace it, or choose "
            "another output"
        )
