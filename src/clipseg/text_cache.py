"""A persistent on-disk cache of text embeddings, shared by processes.

Encoding a class name with 80 prompt templates takes about a second on a CPU even with the
truncated forward, and a class list of a dataset has tens to hundreds of names; the cache keeps
each synonym's embedding between runs and between processes (CLI runs, Dask workers, the napari
plugin).

One file per entry, named by a key that digests everything the embedding depends on: the text
tower's weights (:func:`clipseg.models.text_tower.text_weights_digest`, not the model's name),
the compute dtype, and the token ids of every prompt of the synonym (so the prompt set, the
synonym and the tokenizer). An entry is written to a temp file in the same folder and renamed
into place (``os.replace``), so a reader sees a complete entry or none; each entry carries a
checksum, so a corrupt one is ignored and rewritten. Files are readable as the umask allows
(``0o666 & ~umask``). The folder is held under ``max_bytes`` by deleting the entries used least
recently (a hit refreshes an entry's time).

Where: :func:`open_text_cache` turns the ``text_cache`` option into a cache: ``"auto"`` is
``$CLIPSEG_TEXT_CACHE`` if set, else the platform's user cache folder
(``$XDG_CACHE_HOME/clipseg/text`` or ``~/.cache/clipseg/text`` on Linux,
``~/Library/Caches/clipseg/text`` on macOS, ``%LOCALAPPDATA%\\clipseg\\text`` on Windows);
``"none"`` turns the cache off; anything else is a folder.
"""
from __future__ import annotations

import hashlib
import os
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import current_umask
from .errors import InvalidConfigError

__all__ = ["TextCache", "open_text_cache", "default_text_cache_dir", "DEFAULT_MAX_BYTES"]

#: Default bound of a cache folder (an entry is 2 to 4 KiB: about 16,000 synonyms).
DEFAULT_MAX_BYTES = 64 << 20
_MAGIC = b"CLSGTXT1"
_SUFFIX = ".emb"
_CHECK = 16  # blake2b digest bytes at the end of an entry


def default_text_cache_dir() -> Path:
    """The folder ``text_cache="auto"`` uses (see the module docstring)."""
    env = os.environ.get("CLIPSEG_TEXT_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipseg" / "text"


def open_text_cache(setting: str, max_bytes: int = DEFAULT_MAX_BYTES) -> TextCache | None:
    """The cache the ``text_cache`` option names: ``"auto"``, ``"none"`` or a folder.

    ``"auto"`` honours ``CLIPSEG_TEXT_CACHE`` (itself ``"none"`` to turn the cache off). A
    folder named ``none`` or ``auto`` is written ``./none``.
    """
    if not isinstance(setting, str) or not setting.strip():
        raise InvalidConfigError(f"text_cache: expected 'auto', 'none' or a folder, got "
                                 f"{setting!r}")
    if setting == "auto":
        env = os.environ.get("CLIPSEG_TEXT_CACHE", "").strip()
        if env.lower() == "none":
            return None
        return TextCache(default_text_cache_dir(), max_bytes)
    if setting.lower() == "none":
        return None
    return TextCache(Path(setting).expanduser(), max_bytes)


class TextCache:
    """Text embeddings on disk, one file per (text weights, dtype, prompt tokens).

    Parameters
    ----------
    directory : str or Path
        Created on the first write.
    max_bytes : int
        Bound of the folder's entries; the least recently used go first. A cache checks the
        bound after its first write and then whenever it has written an eighth of the bound,
        so the folder may exceed it by that much per writing process.

    Notes
    -----
    Failing to write (a read-only or full disk) does not fail the encoding: it warns once per
    cache, naming the folder and the error, and later writes are skipped.
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InvalidConfigError(f"max_bytes: expected an integer >= 1, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._mode = 0o666 & ~current_umask()
        self._written = max_bytes  # trim after the first write
        self._broken: str | None = None

    def __repr__(self) -> str:
        return f"TextCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    @staticmethod
    def key(weights: str, dtype: torch.dtype, tokens: torch.Tensor) -> str:
        """Key of one synonym's embedding.

        Parameters
        ----------
        weights : str
            :func:`~clipseg.models.text_tower.text_weights_digest` of the model.
        dtype : torch.dtype
            Compute dtype the embedding was encoded with.
        tokens : torch.LongTensor
            ``(P, C)`` token ids of the synonym's P prompts, in template order.
        """
        data = tokens.detach().to(device="cpu", dtype=torch.int64).contiguous()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{_MAGIC.decode()}|{weights}|{dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.numpy())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str) -> torch.Tensor | None:
        """The ``(D,)`` float32 CPU embedding stored under ``key``, or None.

        A missing, unreadable or corrupt entry (wrong magic, size or checksum, non-finite
        values) is None; the caller encodes again and :meth:`put` replaces it.
        """
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head = len(_MAGIC) + 4
        if len(data) < head + _CHECK or not data.startswith(_MAGIC):
            return None
        (dim,) = struct.unpack("<I", data[len(_MAGIC):head])
        if len(data) != head + 4 * dim + _CHECK or dim == 0:
            return None
        body, check = data[:-_CHECK], data[-_CHECK:]
        if hashlib.blake2b(body, digest_size=_CHECK).digest() != check:
            return None
        vector = torch.from_numpy(np.frombuffer(body, dtype="<f4", offset=head).copy())
        if not bool(torch.isfinite(vector).all()):
            return None
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        return vector

    def put(self, key: str, vector: torch.Tensor) -> None:
        """Store a ``(D,)`` embedding under ``key`` (atomically; see the class notes)."""
        if self._broken is not None:
            return
        values = vector.detach().to(device="cpu", dtype=torch.float32).reshape(-1).numpy()
        body = _MAGIC + struct.pack("<I", values.size) + values.astype("<f4").tobytes()
        data = body + hashlib.blake2b(body, digest_size=_CHECK).digest()
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, self._mode)
            os.replace(tmp, self._path(key))
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._broken = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"text embedding cache {self.directory}: cannot write ({self._broken})"
                          "; embeddings are kept in memory only. Pass text_cache='none' to "
                          "turn the cache off, or a writable folder.", RuntimeWarning,
                          stacklevel=2)
            return
        self._written += len(data)
        if self._written * 8 >= self.max_bytes:
            self.trim()

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of every entry, oldest first."""
        out = []
        try:
            names = list(os.scandir(self.directory))
        except OSError:
            return []
        for entry in names:
            if not entry.name.endswith(_SUFFIX) or entry.name.startswith("."):
                continue
            try:
                stat = entry.stat()
            except OSError:  # removed by another process meanwhile
                continue
            out.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        return sorted(out)

    def size_bytes(self) -> int:
        """Total size of the entries now in the folder."""
        return sum(size for _, size, _ in self.entries())

    def trim(self) -> None:
        """Delete the least recently used entries until the folder holds ``max_bytes``.

        Also removes temp files of writers killed more than an hour ago.
        """
        self._written = 0
        try:
            stale = [p for p in self.directory.glob(f".tmp-*{_SUFFIX}")
                     if time.time() - p.stat().st_mtime > 3600]
        except OSError:
            stale = []
        for path in stale:
            path.unlink(missing_ok=True)
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            try:
                path.unlink()
            except FileNotFoundError:  # another process trimmed it first
                pass
            except OSError:
                continue
            total -= size
