"""Atomic file writes: a temp file in the same folder, fsync, ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never
a half-written file under the final name; a killed writer leaves only a ``.NAME.XXXXXXXX.part``
temp file, which no reader looks at and :func:`remove_leftovers` deletes before ``NAME`` is
written again.

Published files get the mode a plain ``open(path, "w")`` would give them, ``0o666 & ~umask``
(0644 under umask 022, 0600 under 077), not the 0600 of :func:`tempfile.mkstemp`; folders are
created with ``0o777 & ~umask``.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "current_umask", "file_mode",
           "is_leftover", "leftovers", "make_dirs", "remove_leftovers", "temp_target",
           "TEMP_SUFFIX"]

TEMP_SUFFIX = ".part"
# tempfile.mkstemp's random part: 8 characters of this alphabet (tempfile._RandomNameSequence)
_RANDOM = r"[a-z0-9_]{8}"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    On Linux it comes from ``/proc/self/status`` (``Umask:``); elsewhere it is set and restored
    at once under a lock (``os.umask`` is the only portable reader, and it writes).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def _temp_name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.{_RANDOM}{re.escape(TEMP_SUFFIX)}")


def is_leftover(candidate: str | os.PathLike, target: str | os.PathLike) -> bool:
    """True when ``candidate`` is a temp file :func:`atomic_path` made for ``target``."""
    cand, tgt = Path(candidate), Path(target)
    return (cand.parent == tgt.parent
            and _temp_name_pattern(tgt.name).fullmatch(cand.name) is not None)


def temp_target(candidate: str | os.PathLike) -> Path | None:
    """The file a temp name of :func:`atomic_path` stands for (``.a.png.XXXXXXXX.part`` ->
    ``a.png``), or None for any other name."""
    cand = Path(candidate)
    match = re.fullmatch(rf"\.(.+)\.{_RANDOM}{re.escape(TEMP_SUFFIX)}", cand.name)
    return cand.with_name(match.group(1)) if match else None


def leftovers(target: str | os.PathLike) -> list[Path]:
    """Temp files of :func:`atomic_path` for ``target`` left by a killed writer (sorted)."""
    tgt = Path(target)
    pattern = _temp_name_pattern(tgt.name)
    try:
        entries = os.scandir(tgt.parent)
    except OSError:  # no folder yet: nothing left over
        return []
    with entries:
        found = [tgt.parent / e.name for e in entries
                 if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    return sorted(found)


def remove_leftovers(target: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed writer of ``target`` left (only those); return them.

    Only names of the exact form ``.NAME.XXXXXXXX.part`` (the form :func:`atomic_path` uses)
    next to ``target``, and only regular files, are removed. Call it when ``target`` is about
    to be written again, not while another process may be writing it.
    """
    removed = []
    for path in leftovers(target):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p``: missing folders get ``0o777 & ~umask``, like any folder a shell makes."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)  # mkdir's mode 0o777 is filtered by the umask
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temp path that replaces ``path`` when the block succeeds.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and is named
    ``.NAME.XXXXXXXX.part``; it is flushed to disk with ``fsync``, given the umask's mode
    (:func:`file_mode`) before the rename and removed if the block raises, so ``path`` is
    either the old file or the complete new one.
    """
    target = Path(path)
    make_dirs(target.parent)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp made it 0600
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
