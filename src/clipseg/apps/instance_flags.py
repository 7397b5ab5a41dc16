"""``--instances CLASS...``, ``--min-area``, ``--watershed``: the flags of ``clipseg segment``,
``batch`` and ``export`` that split "thing" classes into objects (:mod:`clipseg.instances`).

Parsed here into :class:`clipseg.apps.batch_instances.InstanceOptions`; nothing heavy is
imported at import time (``clipseg CMD --help`` stays fast).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidConfigError

__all__ = ["add_instance_arguments", "instance_options", "canonical_names"]


def add_instance_arguments(parser: argparse.ArgumentParser, *, export: bool = False) -> None:
    """``--instances CLASS...``, ``--min-area N``, ``--watershed`` (app options)."""
    when = ("split these classes at export time where an image has no instance file"
            if export else "also write NAME.instances.tif and coco_instances.json")
    g = parser.add_argument_group("instances (connected components of a semantic map)")
    g.add_argument("--instances", nargs="+", metavar="CLASS", default=None,
                   help=f"class names that are countable things (cells, cars); {when}. "
                        "Names may also be comma-separated")
    g.add_argument("--min-area", type=int, default=None, metavar="N",
                   help="drop objects of fewer than N pixels (default 0)")
    g.add_argument("--watershed", action="store_true",
                   help="separate touching objects of a class with a distance-transform "
                        "watershed (default: plain connected components)")


def _names(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or ():
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def instance_options(args: argparse.Namespace, class_names: Sequence[str] | None) -> Any:
    """The :class:`clipseg.apps.batch_instances.InstanceOptions` of the flags, or None without them.

    ``class_names`` are the classes the names must come from (None: not checked here).
    Unknown names, ``--min-area`` below 0, or ``--min-area``/``--watershed`` without
    ``--instances`` are :class:`InvalidConfigError` (exit 2).
    """
    from .batch_instances import InstanceOptions

    names = _names(getattr(args, "instances", None))
    min_area = getattr(args, "min_area", None)
    watershed = bool(getattr(args, "watershed", False))
    if getattr(args, "instances", None) is not None and not names:
        raise InvalidConfigError("--instances: expected one or more class names, got none")
    if not names:
        if min_area is not None or watershed:
            raise InvalidConfigError("--min-area/--watershed: expected --instances CLASS... "
                                     "naming the classes to split, got none")
        return None
    if min_area is not None and min_area < 0:
        raise InvalidConfigError(f"--min-area: expected an integer >= 0 (pixels), got "
                                 f"{min_area}")
    if class_names is not None:
        names = canonical_names(names, class_names, "--instances")
    return InstanceOptions(classes=tuple(dict.fromkeys(names)), min_area=min_area or 0,
                           watershed=watershed)


def canonical_names(names: Sequence[str], class_names: Sequence[str], flag: str) -> list[str]:
    """``names`` spelled as in ``class_names`` (matched case-insensitively), else an error."""
    known = {n.lower(): n for n in class_names}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise InvalidConfigError(f"{flag}: expected names among the classes "
                                 f"({', '.join(class_names)}), got {', '.join(unknown)}")
    return [known[n.lower()] for n in names]


