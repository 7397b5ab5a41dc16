"""The ``clipseg`` command (also ``python -m clipseg``).

Subcommands::

    clipseg segment IMAGE... --classes "road; street, building, tree" -o OUT/
    clipseg batch DIR --classes-file classes.txt -o OUT/      # recursive, resumable
    clipseg models                                            # registry keys
    clipseg demo -o OUT/                                      # synthetic demo (clipseg.demo)
    clipseg evaluate ... / clipseg calibrate ...              # clipseg.evaluate / .calibrate

The options of the method are not listed here by hand: one flag per field of
:class:`clipseg.config.SegmentConfig` is generated from ``SegmentConfig.flat_fields()``
(``--middle-layer``, ``--tau``, ``--pamr``/``--no-pamr``, ``--short-side none``...), with the
field's documentation as help text, so flags, widget fields and sidecar keys stay one namespace.

Exit codes: 0 = every image done (or skipped as already complete); 1 = at least one image
failed (the others are written; see the summary); 2 = nothing was run: bad command line,
options or classes, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from .config import DSI_MODES, PRECISIONS, PROMPT_SETS, READOUTS, SegmentConfig
from .errors import ClipSegError, InvalidConfigError, InvalidInputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_CHOICES = {"method": READOUTS, "dsi_mode": DSI_MODES, "precision": PRECISIONS,
            "prompts": PROMPT_SETS}
_NONE_WORDS = ("none", "null", "auto-none")


# --------------------------------------------------------------------------------------------
# config flags, generated from SegmentConfig
# --------------------------------------------------------------------------------------------
def _field_docs() -> dict[str, str]:
    """First sentence of each field's numpydoc entry in the config classes."""
    docs: dict[str, str] = {}
    types: dict[str, str] = {}
    groups = {group for group, _ in SegmentConfig.flat_fields().values()}
    for group in groups:
        cls = type(getattr(SegmentConfig(), group))
        text = (cls.__doc__ or "").split("Parameters\n    ----------\n", 1)[-1]
        current: list[str] = []
        for line in text.splitlines():
            head = re.match(r"^    ([a-z_, ]+) : (.*)$", line)
            if head:
                current = [n.strip() for n in head.group(1).split(",")]
                for name in current:  # the type line stands in until a description comes
                    types.setdefault(name, head.group(2).strip())
            elif current and line.startswith("        "):
                for name in current:
                    docs[name] = (docs.get(name, "") + " " + line.strip()).strip()
    out = {}
    for key, value in {**types, **docs}.items():
        value = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", value).replace("``", "")
        out[key] = value.split(". ")[0].rstrip(".")
    return out


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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``SegmentConfig`` field (default: unset, i.e. the config's default)."""
    docs = _field_docs()
    defaults = SegmentConfig().to_flat()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (group, f) in SegmentConfig.flat_fields().items():
        if group not in groups:
            groups[group] = parser.add_argument_group(f"{group} options (SegmentConfig.{group})")
        flag = "--" + name.replace("_", "-")
        text = f"{docs.get(name, name)} (default: {defaults[name]!r})"
        kwargs: dict[str, Any] = {"dest": f"cfg_{name}", "default": argparse.SUPPRESS,
                                  "help": text.replace("%", "%%")}
        ftype = str(f.type)
        if ftype == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif name == "class_thresholds":
            kwargs.update(type=_class_threshold, nargs="+", metavar="NAME=VALUE")
        elif ftype.startswith("tuple[int"):
            kwargs.update(type=int, nargs="+", metavar="N")
        else:
            base = {"str": str, "int": int, "float": float}[ftype.split(" |")[0]]
            kwargs["type"] = _optional(base) if "None" in ftype else base
            if name in _CHOICES:
                kwargs["choices"] = _CHOICES[name]
            kwargs["metavar"] = ("{" + ",".join(_CHOICES[name]) + "}" if name in _CHOICES
                                 else base.__name__.upper() + ("|none" if "None" in ftype
                                                               else ""))
        groups[group].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> SegmentConfig:
    """``--config FILE`` (flat options or a sidecar), then the flags given, as a config."""
    options: dict[str, Any] = {}
    if getattr(args, "config", None):
        options.update(load_options_file(args.config))
    for key, value in vars(args).items():
        if key.startswith("cfg_"):
            options[key[4:]] = value
    if "class_thresholds" in options and isinstance(options["class_thresholds"], list):
        options["class_thresholds"] = dict(options["class_thresholds"])
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


# --------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------
def _add_run_arguments(p: argparse.ArgumentParser, *, resume_default: bool) -> None:
    """Options shared by ``segment`` and ``batch``."""
    cls = p.add_argument_group("classes (',' or a new line separates classes, ';' synonyms)")
    src = cls.add_mutually_exclusive_group(required=True)
    src.add_argument("--classes", help='e.g. "road; street, building, tree, water"')
    src.add_argument("--classes-file", type=Path, help="UTF-8 text file, one class per line")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    out.add_argument("--scores", action="store_true",
                     help="also write per-class probabilities as NAME.scores.tif "
                          "((K, H, W) float16)")
    out.add_argument("--coco", type=Path, default=None, metavar="FILE",
                     help="COCO-style JSON of the run (default: OUT/coco.json)")
    out.add_argument("--no-coco", action="store_true", help="do not write the COCO JSON")
    out.add_argument("--resume", action=argparse.BooleanOptionalAction, default=resume_default,
                     help="skip images whose outputs are complete and made with the same "
                          f"options and classes (default: {'on' if resume_default else 'off'})")
    conv = p.add_argument_group("image conversion (clipseg.image.as_rgb01)")
    conv.add_argument("--channels", type=_optional(int), nargs=3, metavar=("R", "G", "B"),
                      help="input channels that become R, G, B ('none' = empty), e.g. for "
                           "multichannel microscopy")
    conv.add_argument("--contrast-limits", type=float, nargs=2, metavar=("LOW", "HIGH"),
                      help="values mapped to 0 and 1 (default: 8-bit /255, other data "
                           "stretched over the whole image's range)")
    run = p.add_argument_group("running")
    run.add_argument("--config", type=Path, metavar="JSON",
                     help="flat options (SegmentConfig.to_flat()) or a sidecar to start from; "
                          "flags override it")
    run.add_argument("--model-config", type=Path, action="append", default=[], metavar="JSON",
                     help="register an open_clip architecture config file (its name is the "
                          "file stem) before loading, e.g. for a custom architecture; "
                          "repeatable; also sent to Dask workers")
    run.add_argument("--tile-size", type=int, default=2048, metavar="PX",
                     help="with --short-side none, images with a side above PX are processed "
                          "in PX-sized tiles streamed to disk (0 = never tile; default 2048)")
    run.add_argument("--max-pixels", type=int, default=64_000_000, metavar="N",
                     help="refuse untiled images with more pixels (the engine holds K x H x W "
                          "floats); use --short-side none to tile them (default 64e6)")
    run.add_argument("--dask-scheduler", metavar="ADDRESS",
                     help="distribute over an existing dask.distributed scheduler")
    run.add_argument("--dask-local", type=int, metavar="N",
                     help="start a local dask cluster of N worker processes (0 = one per "
                          "GPU, or one when there is no GPU)")
    run.add_argument("--retries", type=int, default=2,
                     help="times a failed image is retried on Dask (default 2)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The full ``clipseg`` parser (subcommands included)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="clipseg", description="Training-free open-vocabulary semantic segmentation "
        "(CLIPSeg: CRA + DSI on a frozen CLIP). Exit status: 0 ok, 1 some image failed, "
        "2 bad usage.")
    parser.add_argument("--version", action="version", version=f"clipseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    seg = sub.add_parser("segment", help="segment image files",
                         description="Segment the given images; one label image + sidecar each.")
    seg.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_run_arguments(seg, resume_default=False)
    seg.set_defaults(func=_cmd_run, walk=False)

    bat = sub.add_parser("batch", help="pre-label a folder (recursive, resumable)",
                         description="Segment every image under DIR (png, jpg, jpeg, tif, "
                         "tiff, bmp, webp), mirroring its folders under OUT.")
    bat.add_argument("folder", type=Path, metavar="DIR")
    bat.add_argument("--no-recursive", dest="recursive", action="store_false",
                     help="only DIR itself, not its subfolders")
    _add_run_arguments(bat, resume_default=True)
    bat.set_defaults(func=_cmd_run, walk=True)

    mod = sub.add_parser("models", help="list registered models by domain, with their cache "
                         "state")
    mod.add_argument("--model-config", type=Path, action="append", default=[], metavar="JSON")
    mod.set_defaults(func=_cmd_models)

    demo = sub.add_parser("demo", help="run the synthetic demo (no downloads)")
    demo.add_argument("-o", "--output", type=Path, required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--method", default="clipseg", choices=READOUTS)
    demo.set_defaults(func=_cmd_demo)

    for name in ("evaluate", "calibrate"):
        module = _optional_module(f"clipseg.{name}")
        hook = getattr(module, "add_subparser", None) if module is not None else None
        if callable(hook):
            hook(sub)
    return parser


def _optional_module(name: str) -> Any:
    """Import a subcommand module that may not be installed in this build; else None."""
    try:
        return import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
def register_model_configs(paths: Sequence[Path]) -> list[str]:
    """Register open_clip architecture JSON files; returns their names (file stems)."""
    import open_clip

    names = []
    for path in paths:
        path = Path(path)
        if not path.is_file() or path.suffix.lower() != ".json":
            raise InvalidConfigError(f"--model-config: expected an existing .json file, got "
                                     f"{str(path)!r}")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidConfigError(f"--model-config {path}: not readable JSON: {exc}") from exc
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise InvalidConfigError(f"--model-config {path}: expected an open_clip config with "
                                     f"embed_dim, vision_cfg and text_cfg, got keys "
                                     f"{sorted(cfg) if isinstance(cfg, dict) else type(cfg)}")
        existing = open_clip.get_model_config(path.stem)
        if existing is None:
            open_clip.add_model_config(path)
        elif existing != cfg:
            raise InvalidConfigError(f"--model-config {path}: the name {path.stem!r} already "
                                     "names a different open_clip architecture; rename the file")
        names.append(path.stem)
    return names


def _read_classes(args: argparse.Namespace) -> list[Any]:
    from .text import parse_classes

    if args.classes_file is not None:
        try:
            text = Path(args.classes_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"--classes-file: expected a readable UTF-8 text file, got "
                                    f"{args.classes_file}: {exc}") from exc
    else:
        text = args.classes
    return parse_classes(text)


def _cmd_run(args: argparse.Namespace) -> int:
    from .batch import RunOptions, discover, run_jobs

    register_model_configs(args.model_config)
    config = config_from_args(args)
    classes = _read_classes(args)
    unknown = sorted({n for n, _ in config.labels.class_thresholds} - {c.name for c in classes})
    if unknown:
        raise InvalidConfigError(f"--class-thresholds: expected names among the classes "
                                 f"({', '.join(c.name for c in classes)}), got "
                                 f"{', '.join(unknown)}")
    if args.dask_scheduler and args.dask_local is not None:
        raise InvalidConfigError("expected at most one of --dask-scheduler and --dask-local, "
                                 "got both")
    for flag, value, low in (("--tile-size", args.tile_size, 0), ("--max-pixels",
                             args.max_pixels, 1), ("--retries", args.retries, 0),
                             ("--dask-local", args.dask_local, 0)):
        if value is not None and value < low:
            raise InvalidConfigError(f"{flag}: expected an integer >= {low}, got {value}")
    if args.walk:
        jobs = discover([args.folder], args.output, recursive=args.recursive, walk=True)
    else:
        jobs = discover(args.images, args.output, recursive=False, walk=False)
    options = RunOptions(output=Path(args.output), scores=args.scores, resume=args.resume,
                         tile_size=args.tile_size, max_pixels=args.max_pixels,
                         model_configs=tuple(str(p.resolve()) for p in args.model_config),
                         coco=None if args.no_coco else (args.coco or args.output / "coco.json"),
                         progress=not args.quiet, retries=args.retries,
                         channels=tuple(args.channels) if args.channels else None,
                         contrast_limits=tuple(args.contrast_limits) if args.contrast_limits
                         else None)
    summary = run_jobs(jobs, config, classes, options, dask_scheduler=args.dask_scheduler,
                       dask_local=args.dask_local)
    print(summary.report(), file=sys.stderr)
    return EXIT_FAILED if summary.failures else EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.listing import model_listing

    register_model_configs(args.model_config)
    print(model_listing())
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    module = _optional_module("clipseg.demo")
    if module is None or not hasattr(module, "run_demo"):
        print("clipseg demo: this build has no clipseg.demo module (run_demo); nothing was run.",
              file=sys.stderr)
        return EXIT_USAGE
    result = module.run_demo(args.output, seed=args.seed, method=args.method)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``clipseg`` command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # argparse exits on --help/--version (0) and on bad usage (2)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code = args.func(args)
        return EXIT_OK if code is None else int(code)
    except ClipSegError as exc:
        print(f"clipseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"clipseg {args.command}: interrupted; finished outputs are complete, rerun with "
              "--resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args",
           "register_model_configs", "load_options_file", "EXIT_OK", "EXIT_FAILED",
           "EXIT_USAGE"]
