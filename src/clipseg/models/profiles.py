"""Saved model profiles: a registry entry tuned by the user (e.g. ``clipseg calibrate``).

A profile is a :class:`~clipseg.models.registry.ModelEntry` stored as one JSON file per name in
the user's config folder:

- ``$CLIPSEG_HOME/profiles/`` when the environment variable ``CLIPSEG_HOME`` is set;
- else ``$XDG_CONFIG_HOME/clipseg/profiles/`` when ``XDG_CONFIG_HOME`` is set;
- else ``~/.config/clipseg/profiles/``.

:func:`clipseg.models.get_entry` finds a profile by its name after the built-in keys, so the
widget's model list and ``--model NAME`` on the command line select it like any other model.
File format::

    {"version": 1, "name": "my-cells", "entry": {<ModelEntry fields>}}
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, InvalidInputError
from .registry import ModelEntry

__all__ = ["profiles_dir", "save_profile", "get_profile", "list_profiles", "delete_profile"]

_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def profiles_dir() -> Path:
    """Folder holding the profile files (not created here)."""
    home = os.environ.get("CLIPSEG_HOME")
    if home:
        return Path(home).expanduser() / "profiles"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "clipseg" / "profiles"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidConfigError(
            "profile name: expected 1-100 characters of letters, digits, '.', '_' or '-' "
            f"starting with a letter or digit (it becomes a file name), got {name!r}")
    return name


def _path(name: str) -> Path:
    return profiles_dir() / f"{_check_name(name)}.json"


def save_profile(name: str, entry: ModelEntry) -> Path:
    """Store ``entry`` under ``name`` (its ``key`` becomes ``name``); overwrite any old one.

    Parameters
    ----------
    name : str
        Profile name: letters, digits, ``.``, ``_``, ``-``.
    entry : ModelEntry
        The tuned entry (architecture, weights, middle layer, window, logit scale).

    Returns
    -------
    pathlib.Path
        The JSON file written.

    Raises
    ------
    InvalidConfigError
        Bad name or ``entry`` not a ModelEntry.
    """
    path = _path(name)
    if not isinstance(entry, ModelEntry):
        raise InvalidConfigError(f"save_profile: expected a ModelEntry, got {entry!r}")
    entry = dataclasses.replace(entry, key=name)
    data = {"version": _VERSION, "name": name, "entry": dataclasses.asdict(entry)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _read(path: Path) -> ModelEntry:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"profile file {path}: expected readable JSON, got {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != _VERSION \
            or not isinstance(data.get("entry"), dict):
        raise InvalidInputError(
            f"profile file {path}: expected {{'version': {_VERSION}, 'entry': {{...}}}}, got "
            f"{str(data)[:120]!r}")
    fields = {f.name for f in dataclasses.fields(ModelEntry)}
    raw = data["entry"]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise InvalidInputError(f"profile file {path}: unknown entry field(s) {unknown}; "
                                f"expected some of {sorted(fields)}")
    try:
        return ModelEntry(**raw)
    except TypeError as exc:  # a required field is missing
        raise InvalidInputError(f"profile file {path}: incomplete entry ({exc})") from exc


def get_profile(name: str) -> ModelEntry | None:
    """The saved entry called ``name``, or None when there is no such profile.

    A name that could not be a profile file name (it contains ``/``, like registry keys do)
    returns None. A file that exists but is malformed raises
    :class:`~clipseg.errors.InvalidInputError` naming the file.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    path = profiles_dir() / f"{name}.json"
    if not path.is_file():
        return None
    return _read(path)


def list_profiles() -> list[str]:
    """Names of the saved profiles, sorted."""
    folder = profiles_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _NAME.match(p.stem))


def delete_profile(name: str) -> bool:
    """Remove profile ``name``; True if a file was removed."""
    path = _path(name)
    if path.is_file():
        path.unlink()
        return True
    return False
