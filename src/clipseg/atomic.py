"""Atomic file writes: a temp file in the same folder, fsync, ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never
a half-written file under the final name; a killed writer leaves only a ``.NAME.XXXX.part``
temp file, which no reader looks at.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temp path that replaces ``path`` when the block succeeds.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and is named
    ``.NAME.XXXX.part``; it is flushed to disk with ``fsync`` before the rename and removed if
    the block raises, so ``path`` is either the old file or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file, then it replaces ``path``.

    See :func:`atomic_path`.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX (directories cannot be opened for fsync on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
