"""Command-line flags of the run options, generated from their declarations.

One flag per declared option (:func:`clipseg.config.option_specs`): ``--middle-layer``,
``--tau``, ``--pamr``/``--no-pamr``, ``--short-side 0``... with the option's help, choices and
bounds. ``none`` (or ``model``) given to an option whose ``None`` has a meaning selects it (the
model's value, for the model-dependent options). Imports nothing heavy: ``--help`` and argument
errors answer before torch or open_clip are loaded.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import OptionSpec, SegmentConfig, option_specs
from ..errors import InvalidConfigError

__all__ = ["add_config_arguments", "config_from_args", "config_overrides", "load_options_file",
           "add_channels_argument", "channel_choice"]

_NONE_WORDS = ("none", "null", "model", "default")
_TYPES = {"int": int, "float": float, "str": str}


def _optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _class_threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number after '=', got {value!r}") from None


def _default_text(spec: OptionSpec) -> str:
    if spec.default is None:
        return spec.none or "none"
    if spec.kind == "bool":
        return "on" if spec.default else "off"
    if spec.kind == "ints":
        return " ".join(str(v) for v in spec.default)
    if spec.kind == "mapping":
        return "none"
    return str(spec.default)


def help_text(spec: OptionSpec) -> str:
    """The flag's help: the option's help, its unit and range, and its default."""
    extra = [p for p in (spec.unit, spec.describe_range() if not spec.choices else "") if p]
    text = spec.help + (f" [{', '.join(extra)}]" if extra else "")
    if spec.optional and spec.none and spec.default is not None:
        text += f" 'none' = {spec.none}."
    return f"{text} (default: {_default_text(spec)})"


def _argument(spec: OptionSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dest": f"cfg_{spec.name}", "default": argparse.SUPPRESS,
                              "help": help_text(spec).replace("%", "%%")}
    if spec.kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif spec.kind == "mapping":
        kwargs.update(type=_class_threshold, nargs="+", metavar="NAME=VALUE")
    elif spec.kind == "ints":
        kwargs.update(type=int, nargs="+", metavar="N")
    else:
        base = _TYPES[spec.kind]
        kwargs["type"] = _optional(base) if spec.optional else base
        if spec.choices and spec.checked:  # the usual values; the option's check decides
            kwargs["metavar"] = "{" + ",".join(spec.choices) + ",...}"
        elif spec.choices:
            kwargs["choices"] = spec.choices
            kwargs["metavar"] = "{" + ",".join(spec.choices) + "}"
        else:
            kwargs["metavar"] = base.__name__.upper() + ("|none" if spec.optional else "")
    return kwargs


CHANNELS_HELP = ("input channels that become R, G, B: three channel indices (0-based) or "
                 "channel names read from the file (OME-TIFF, ImageJ, OME-Zarr), 'none' or '-' "
                 "for a black slot (e.g. '2 1 0', 'mCherry GFP DAPI', '- GFP DAPI'); or slots "
                 "by name ('g=GFP b=DAPI'); or 'dyes': each channel named after a known dye "
                 "to its colour (DAPI, Hoechst -> blue; GFP, FITC, Alexa 488 -> green; "
                 "mCherry, TRITC, Cy3, Alexa 568 -> red; Cy5, Alexa 647 -> red when no red "
                 "dye is present; docs/microscopy.md)")


def add_channels_argument(parser: Any) -> None:
    """``--channels``, declared here once for ``segment``, ``batch`` and ``calibrate``; read
    it with :func:`channel_choice`."""
    parser.add_argument("--channels", nargs="+", metavar="CH", help=CHANNELS_HELP)


def channel_choice(args: argparse.Namespace) -> Any:
    """The parsed ``--channels`` (a :class:`clipseg.channels.ChannelChoice`), or None."""
    from ..channels import ChannelChoice

    words = getattr(args, "channels", None)
    return None if words is None else ChannelChoice.parse(words)


_GROUP_TITLES = {"model": "model options", "readout": "readout options (the method)",
                 "window": "window options", "labels": "label options",
                 "refine": "refinement options (PAMR)"}


def add_config_arguments(parser: argparse.ArgumentParser, *,
                         skip: tuple[str, ...] = ()) -> None:
    """Add one flag per declared option (unset by default: the config's own default).

    Parameters
    ----------
    parser : argparse.ArgumentParser
    skip : tuple of str
        Option names a command declares itself.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in option_specs().values():
        if spec.name in skip:
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(_GROUP_TITLES[spec.group])
        groups[spec.group].add_argument(spec.flag, **_argument(spec))


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The options given as flags, by flat name (``class_thresholds`` as a dict)."""
    options = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg_")}
    if isinstance(options.get("class_thresholds"), list):
        options["class_thresholds"] = dict(options["class_thresholds"])
    return options


def config_from_args(args: argparse.Namespace) -> SegmentConfig:
    """``--config FILE`` (flat options or a sidecar), then the flags given, as a config."""
    options: dict[str, Any] = {}
    if getattr(args, "config", None):
        options.update(load_options_file(args.config))
    options.update(config_overrides(args))
    return SegmentConfig.from_flat(options)


def load_options_file(path: str | Path) -> dict[str, Any]:
    """Flat options from a JSON file: a ``to_flat()`` dict, or a sidecar (its ``config``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidConfigError(f"--config {path}: expected a JSON file of options, could not "
                                 f"read it: {exc}") from exc
    if isinstance(data, dict) and "version" in data and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise InvalidConfigError(f"--config {path}: expected a JSON object of flat options, "
                                 f"got {type(data).__name__}")
    return data
