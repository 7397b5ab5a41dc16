"""The ``clipseg`` command (also ``python -m clipseg``).

Subcommands::

    clipseg segment IMAGE... --classes "road; street, building, tree" -o OUT/
    clipseg batch DIR --classes-file classes.txt -o OUT/      # recursive, resumable
    clipseg models                                            # registry keys
    clipseg demo -o OUT/                                      # synthetic demo (clipseg.apps.demo)
    clipseg evaluate ... / clipseg calibrate ...              # clipseg.apps.evaluate / .calibrate
    clipseg export DRAFTS -o OUT --format coco masks yolo     # clipseg.apps.export

The options of the method are not listed here by hand: one flag per declared option of
:class:`clipseg.config.SegmentConfig` is generated from its declaration
(:mod:`clipseg.apps.cliopts`), so flags, widget fields, docs and sidecar keys stay one namespace.

Parsing imports nothing heavy: ``clipseg --help``, ``clipseg CMD --help`` and argument errors
answer before torch or open_clip are loaded; each command imports what it needs when it runs.

Exit codes: 0 = every image done (or skipped as already complete); 1 = at least one image
failed (the others are written; see the summary), or an I/O error (disk full, read-only or
forbidden folder) stopped the run or its COCO JSON; 2 = nothing was run: bad command line,
options, classes or output path, or the model could not be loaded.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..config import READOUTS
from ..errors import ClipSegError, InvalidConfigError, InvalidInputError
from .cliopts import (
    add_channels_argument,
    add_config_arguments,
    channel_choice,
    config_from_args,
    load_options_file,
)
from .instance_flags import add_instance_arguments, instance_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

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
    out.add_argument("--vector", nargs="?", const="", default=None, metavar="FILE.geojson",
                     help="also write the labels as GeoJSON polygons (one per connected "
                          "region: class, label, area_px), in the GeoTIFF input's world "
                          "coordinates, else pixel coordinates; FILE for a one-image "
                          "'segment', else OUT/NAME.geojson per image (needs "
                          "napari-clipseg[geo])")
    out.add_argument("--coco", type=Path, default=None, metavar="FILE",
                     help="COCO-style JSON of the run (default: OUT/coco.json)")
    out.add_argument("--no-coco", action="store_true", help="do not write the COCO JSON")
    out.add_argument("--allow-output-in-input", action="store_true",
                     help="allow an output folder that is, is inside or contains the input "
                          "folder (an input, or a file that is not a clipseg output, is still "
                          "never replaced)")
    out.add_argument("--resume", action=argparse.BooleanOptionalAction, default=resume_default,
                     help="skip images whose outputs are complete and made with the same "
                          f"options and classes (default: {'on' if resume_default else 'off'})")
    conv = p.add_argument_group("image conversion (clipseg.image.as_rgb01)")
    add_channels_argument(conv)
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
                     help="with --short-side 0, images with a side above PX are processed "
                          "in PX-sized tiles streamed to disk (0 = never tile; default 2048)")
    run.add_argument("--max-pixels", type=int, default=64_000_000, metavar="N",
                     help="refuse untiled images with more pixels (the engine holds K x H x W "
                          "floats); use --short-side 0 to tile them (default 64e6)")
    run.add_argument("--dask-scheduler", metavar="ADDRESS",
                     help="distribute over an existing dask.distributed scheduler")
    run.add_argument("--dask-local", type=int, metavar="N",
                     help="start a local dask cluster of N worker processes (0 = one per "
                          "GPU, or one when there is no GPU)")
    run.add_argument("--retries", type=int, default=2,
                     help="times a failed image is retried on Dask (default 2)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_instance_arguments(p)
    add_config_arguments(p)


class _Parser(argparse.ArgumentParser):
    """argparse with whole option names only (``--pamr-iter`` is not ``--pamr-iterations``)
    and a short answer to bad usage: the error, and where the full help is, not a usage
    block of every flag. The subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        usage = self.format_usage().strip()
        if usage.count("\n") > 3:  # a long command: its name and the way to its help
            usage = f"usage: {self.prog} ... (`{self.prog} --help` lists every option)"
        self.exit(EXIT_USAGE, f"{usage}\n{self.prog}: error: {message}\n")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:  # argparse keeps its subcommands in its actions
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def build_parser() -> argparse.ArgumentParser:
    """The full ``clipseg`` parser (subcommands included)."""
    from .. import __version__

    parser = _Parser(
        prog="clipseg", description="Training-free open-vocabulary semantic segmentation "
        "(CLIPSeg: CRA + DSI on a frozen CLIP). Exit status: 0 ok, 1 some image failed or "
        "an output could not be written, 2 bad usage, 130 interrupted.")
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
                         "tiff, bmp, webp, and OME-Zarr .zarr folders), mirroring its folders "
                         "under OUT.")
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

    from . import calibrate_cli, evaluate, export

    evaluate.add_subparser(sub)
    calibrate_cli.add_subparser(sub)
    export.add_subparser(sub)
    return parser


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
def _read_classes(args: argparse.Namespace) -> list[Any]:
    from ..text import class_file_text, parse_classes

    if args.classes_file is not None:
        try:
            text = class_file_text(Path(args.classes_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"--classes-file: expected a readable UTF-8 text file, got "
                                    f"{args.classes_file}: {exc}") from exc
        if not text:
            raise InvalidInputError(f"--classes-file: expected class names, one per line, got "
                                    f"{args.classes_file} with none (only blank lines and "
                                    "'#' comments)")
    else:
        text = args.classes
    return parse_classes(text)


def _cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # option errors answer before anything heavy is imported
    from ..models.arch_configs import register_model_configs
    from .jobs import IMAGE_EXTENSIONS, RunOptions, discover
    from .outputs import InputTree, check_jobs, check_output_folder, check_writable
    from .run import run_jobs

    register_model_configs(args.model_config)
    classes = _read_classes(args)
    unknown = sorted({n for n, _ in config.labels.class_thresholds} - {c.name for c in classes})
    if unknown:
        raise InvalidConfigError(f"--class-thresholds: expected names among the classes "
                                 f"({', '.join(c.name for c in classes)}), got "
                                 f"{', '.join(unknown)}")
    instances = instance_options(args, [c.name for c in classes])
    if args.dask_scheduler and args.dask_local is not None:
        raise InvalidConfigError("expected at most one of --dask-scheduler and --dask-local, "
                                 "got both")
    for flag, value, low in (("--tile-size", args.tile_size, 0), ("--max-pixels",
                             args.max_pixels, 1), ("--retries", args.retries, 0),
                             ("--dask-local", args.dask_local, 0)):
        if value is not None and value < low:
            raise InvalidConfigError(f"{flag}: expected an integer >= {low}, got {value}")
    if args.contrast_limits is not None:
        low, high = args.contrast_limits
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InvalidConfigError(f"--contrast-limits: expected LOW HIGH, finite with LOW < "
                                     f"HIGH, got {low:g} {high:g}")
    channels = channel_choice(args)  # checked against the first image by preflight
    # the output-path policy (clipseg.apps.outputs), before any image or model is touched
    given = [args.folder] if args.walk else list(args.images)
    tree = InputTree.of(given, walk=args.walk)
    allow = args.allow_output_in_input
    if not args.walk or tree.folders[0].is_dir():  # else discover says the folder is missing
        out = check_output_folder(args.output, tree, allow_in_input=allow)
    jobs = discover(given, args.output, recursive=args.recursive if args.walk else False,
                    walk=args.walk)
    if not jobs and args.walk:  # a wrong folder: say so, not an empty coco.json and exit 0
        where = "in it" if not args.recursive else "in it or its subfolders"
        raise InvalidInputError(
            f"expected images in {given[0]}, found none {where} (taken: "
            f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)} files and OME-Zarr .zarr "
            "folders; files under -o are never inputs). Check the folder"
            + ("" if args.recursive else ", or drop --no-recursive"))
    coco = None if args.no_coco else (args.coco or args.output / "coco.json")
    check_jobs(jobs, tree=tree, output=out, coco=coco, allow_in_input=allow)
    check_writable(out)  # a read-only or forbidden folder stops the run here (exit 1)
    vector_file = _vector_file(args, jobs)
    options = RunOptions(output=Path(args.output), scores=args.scores, resume=args.resume,
                         tile_size=args.tile_size, max_pixels=args.max_pixels,
                         model_configs=tuple(str(p.resolve()) for p in args.model_config),
                         coco=coco,
                         progress=not args.quiet, retries=args.retries,
                         channels=channels,
                         contrast_limits=tuple(args.contrast_limits) if args.contrast_limits
                         else None, vector=args.vector is not None, vector_file=vector_file,
                         instances=instances)
    summary = run_jobs(jobs, config, classes, options, dask_scheduler=args.dask_scheduler,
                       dask_local=args.dask_local)
    print(summary.report(), file=sys.stderr)
    return EXIT_FAILED if summary.failures or summary.errors else EXIT_OK


def _vector_file(args: argparse.Namespace, jobs: Sequence[Any]) -> Path | None:
    """``--vector FILE`` checked (one image only, a .geojson name); the polygoniser present."""
    if args.vector is None:
        return None
    from ..formats.geo import require_vector_deps

    require_vector_deps()
    if not args.vector:
        return None
    if args.walk or len(jobs) != 1:
        raise InvalidConfigError(f"--vector {args.vector}: expected a file name only for one "
                                 f"image, got a run of {len(jobs)}; give --vector without a "
                                 "file name to write NAME.geojson next to each label file")
    target = Path(args.vector)
    if target.suffix.lower() not in (".geojson", ".json"):
        raise InvalidConfigError(f"--vector: expected a .geojson file name, got {target}")
    if target.resolve() == Path(jobs[0].source).resolve():
        raise InvalidConfigError(f"--vector {target}: expected a new file, got the input image")
    return target


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.arch_configs import register_model_configs
    from ..models.listing import model_listing

    register_model_configs(args.model_config)
    print(model_listing())
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.output, seed=args.seed, method=args.method)
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
        args, extra = parser.parse_known_args(None if argv is None else list(argv))
        if extra:  # answered by the subcommand: its usage, not the top level's
            (_subparser(parser, args.command) or parser).error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits on --help/--version (0) and on bad usage (2)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code = args.func(args)
        return EXIT_OK if code is None else int(code)
    except ClipSegError as exc:
        print(f"clipseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, read-only, no permission...: one line, never a traceback
        from .outputs import describe_os_error

        print(f"clipseg {args.command}: error: {describe_os_error(exc)}; files written before "
              "this are complete", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"clipseg {args.command}: interrupted; finished outputs are complete, rerun with "
              "--resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args",
           "load_options_file", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]
