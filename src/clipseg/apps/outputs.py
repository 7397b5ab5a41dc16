"""Where ``clipseg segment`` / ``clipseg batch`` may write: one rule for every output path.

Checked before any work (before the model loads), a refusal being an
:class:`OutputPathError` (exit 2) that says what was given, why it is refused and what to do:

1. ``-o`` is a folder: an existing regular file (or a path under one) is refused.
2. The output folder does not overlap the input tree, unless ``--allow-output-in-input`` is
   given. For ``batch DIR`` the tree is ``DIR`` and every folder below it: the output folder
   may not be ``DIR``, inside it, or contain it. ``segment`` reads only the files given, so
   its tree is the folders holding them: the output folder may not be one of those, or
   contain an input (a new subfolder next to the images, ``-o imgs/labels``, is fine).
3. Even with ``--allow-output-in-input``, no job may write (or, rewriting a result, delete) a
   file that is an input of the run, or an existing file that is not a clipseg output. A
   clipseg output is a label image whose sidecar names it, a sidecar, an edit mask or a scores
   file. Two jobs never share an output name, and the COCO file is never an input or a folder.

Plus :func:`check_writable`: the output folder (or its nearest existing parent) must be
writable, else the run stops with the OS error (exit 1) before any image is segmented.

:func:`describe_os_error` turns an ``OSError`` into the one-line message the CLI prints.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import temp_target
from ..errors import InvalidInputError
from ..formats import io

if TYPE_CHECKING:
    from .jobs import Job

ALLOW_FLAG = "--allow-output-in-input"
SCORES_SUFFIX = ".scores.tif"

__all__ = ["ALLOW_FLAG", "OutputPathError", "check_output_folder", "check_jobs",
           "check_writable", "describe_os_error", "InputTree", "is_tool_output", "job_paths",
           "resolve_path"]


class OutputPathError(InvalidInputError):
    """An output path the run refuses to write (it could replace or mix with the inputs)."""


def resolve_path(path: str | os.PathLike) -> Path:
    """``Path.resolve()`` that does not raise on a symbolic link loop (the loop is kept)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # RuntimeError before Python 3.13, OSError(ELOOP) after
        return Path(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or below it (both resolved)."""
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class InputTree:
    """Where a run's inputs are: ``folders``, with everything below them when ``walked``."""

    folders: tuple[Path, ...]
    walked: bool

    @classmethod
    def of(cls, paths: Sequence[str | os.PathLike], *, walk: bool) -> InputTree:
        """The folder ``batch`` walks, or the folders holding the files given to ``segment``."""
        if walk:
            return cls((resolve_path(paths[0]),), True)
        return cls(tuple(sorted({resolve_path(p).parent for p in paths})), False)

    def __str__(self) -> str:
        return ", ".join(map(str, self.folders))

    def holds(self, path: Path) -> bool:
        """``path`` (a folder, or a file's folder for files) is in the tree."""
        return any(path == f or (self.walked and f in path.parents) for f in self.folders)

    def overlaps(self, output: Path) -> bool:
        """The output folder is in the tree or contains a part of it."""
        return self.holds(output) or any(_inside(f, output) for f in self.folders)


def check_output_folder(output: str | os.PathLike, tree: InputTree, *,
                        allow_in_input: bool) -> Path:
    """Rules 1 and 2 of the module; returns the resolved output folder."""
    given = Path(output)
    out = resolve_path(given)
    if out.exists() and not out.is_dir():
        raise OutputPathError(
            f"-o {given}: expected an output folder, got an existing file; the label images, "
            f"sidecars and coco.json of a run go into a folder. Pass a folder path (it is "
            f"created if missing), e.g. -o {given.with_suffix('')}_labels")
    if os.path.lexists(given) and not given.exists():
        raise OutputPathError(f"-o {given}: expected an output folder, got a symbolic link "
                              f"that loops or points to nothing ({os.readlink(given)!r}); fix "
                              "or remove the link, or choose another -o folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"-o {given}: expected an output folder, but {parent} is "
                                      "an existing file, so no folder can be made there; "
                                      "choose another -o path")
            break
    if not allow_in_input and tree.overlaps(out):
        if out in tree.folders:
            where = "an input folder itself"
        elif tree.holds(out):
            where = "a folder inside the input tree"
        else:
            where = "a folder that contains input images"
        raise OutputPathError(
            f"-o {given}: expected an output folder outside the input tree {tree}, got "
            f"{where}; outputs there could replace input images or be taken as inputs by the "
            f"next run. Choose a separate -o folder, or pass {ALLOW_FLAG} to write there "
            "anyway (an input, or any file that is not a clipseg output, is still never "
            "replaced)")
    return out


def job_paths(base: Path) -> list[Path]:
    """Every path writing job ``base`` may create, replace or (rewriting it) delete."""
    return [base.with_name(base.name + suffix) for suffix in
            (*io.IMAGE_SUFFIXES, io.SIDECAR_SUFFIX, io.EDITS_SUFFIX, SCORES_SUFFIX)]


def is_tool_output(path: Path) -> bool:
    """True for a clipseg output: a sidecar, an edit mask, a scores file, or a label image
    whose sidecar names it."""
    name = path.name
    if name.endswith((io.SIDECAR_SUFFIX, io.EDITS_SUFFIX, SCORES_SUFFIX)):
        return True
    if path.suffix.lower() not in io.IMAGE_SUFFIXES:
        return False
    side = io.sidecar_path(path)
    if not side.is_file():
        return False
    try:
        meta = io.read_sidecar(side)
    except InvalidInputError:
        return False
    return meta.get("file") == name


def check_jobs(jobs: Sequence[Job], *, tree: InputTree, output: Path, coco: Path | None,
               allow_in_input: bool) -> None:
    """Rule 3 of the module: no job writes over an input, a stranger's file or another job
    (and the COCO file follows rule 2)."""
    sources = {j.source for j in jobs}
    owner: dict[Path, Job] = {}
    strict = tree.overlaps(output)  # the output folder is shared with the inputs
    for job in jobs:
        for path in job_paths(job.base):
            if path in sources:
                raise OutputPathError(
                    f"{job.source}: its result {path.name} would replace the input image "
                    f"{path}; expected an output folder that holds no inputs. Choose a "
                    f"separate -o folder")
            other = owner.setdefault(path, job)
            if other is not job:
                raise OutputPathError(
                    f"{other.source} and {job.source}: expected one output name per image, "
                    f"got {path.name} for both; rename one of them")
            if strict and path.exists() and not is_tool_output(path):
                raise OutputPathError(
                    f"{job.source}: its result would replace {path}, which is not a clipseg "
                    "output; expected the output folder to hold only inputs and clipseg "
                    "outputs. Choose a separate -o folder, or move that file")
    if coco is not None:
        target = resolve_path(coco)
        if target.is_dir():
            raise OutputPathError(f"--coco {coco}: expected a file path for the COCO JSON, got "
                                  f"a folder; pass e.g. --coco {Path(coco) / 'coco.json'}")
        if target in sources or target in owner:
            raise OutputPathError(f"--coco {coco}: expected a new file for the COCO JSON, got "
                                  "an input or a result of this run; pass another path")
        if not allow_in_input and tree.holds(target.parent):
            raise OutputPathError(
                f"--coco {coco}: expected the COCO JSON outside the input tree {tree}; "
                f"choose another path (the default is OUT/coco.json), or pass {ALLOW_FLAG}")


def check_writable(output: Path) -> None:
    """Raise the ``OSError`` a write into ``output`` would meet (read-only file system, no
    permission), before any work; nothing is created."""
    folder = output
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EACCES
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                code = errno.EROFS
        except (OSError, AttributeError):
            pass
        raise OSError(code, os.strerror(code), str(folder))


_ADVICE = {
    errno.ENOSPC: "free some space or write to another disk (-o, --coco)",
    errno.EDQUOT: "free some space or write to another disk (-o, --coco)",
    errno.EROFS: "the file system is read-only: choose a writable -o folder",
    errno.EACCES: "no permission: choose a folder you can write, or fix its permissions",
    errno.EPERM: "no permission: choose a folder you can write, or fix its permissions",
    errno.EEXIST: "a file is in the way: choose another -o folder or move that file",
    errno.ENOTDIR: "a file is where a folder is needed: choose another -o folder",
    errno.EISDIR: "a folder is where a file is needed: choose another path",
    errno.ELOOP: "a symbolic link loops: fix or remove the link",
}


def describe_os_error(exc: OSError, doing: str = "", path: str | os.PathLike | None = None
                      ) -> str:
    """``[doing ]FILE: cause (ENAME); advice`` for an ``OSError``.

    ``FILE`` is the error's file name (a temp file of :mod:`clipseg.atomic` is shown as the
    file it was to become), else ``path``.
    """
    name = errno.errorcode.get(exc.errno or 0, "")
    cause = exc.strerror or str(exc)
    named = []
    for f in (exc.filename, exc.filename2):
        if f is not None:
            target = temp_target(os.fsdecode(f))
            named.append(str(target if target is not None else f))
    if not named and path is not None:
        named.append(str(path))
    files = " -> ".join(named)
    text = f"{doing + ' ' if doing else ''}{files + ': ' if files else ''}{cause}"
    text += f" ({name})" if name else ""
    advice = _ADVICE.get(exc.errno or 0)
    return f"{text}; {advice}" if advice else text
