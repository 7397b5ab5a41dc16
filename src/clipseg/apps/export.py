"""``clipseg export``: a reviewed drafts folder as COCO, per-image masks and YOLO-seg labels.

The drafts folder is what ``clipseg batch`` writes (and the review widget corrects): one
label image + ``NAME.clipseg.json`` sidecar per image, the sidecar recording the review state
(:mod:`clipseg.formats.review`) and, with ``--instances``, an instance file. The export::

    OUT/coco.json               semantic: one annotation per (image, class present)
    OUT/coco_instances.json     instances: one annotation per object (iscrowd 0)
    OUT/masks/REL.png|.tif      semantic labels, values = the merged category ids
    OUT/masks/REL.instances.png|.tif   object ids, where the image has instances
    OUT/masks/REL.instances.json       the class (category id) of each object id
    OUT/masks/classes.json      the merged class table
    OUT/labels/NAME.txt         YOLO-seg: "class x1 y1 x2 y2 ..." per object, normalised
                                (NAME: the image's relative name without its extension)
    OUT/data.yaml               YOLO's class names (the images are not copied)
    OUT/clipseg-export.json     what was written, from which folder (written last)

Rules: only *reviewed* images are exported; drafts make the export refuse (exit 2, listing
them) unless ``--include-drafts``; *skipped* images are never exported. The class tables of
all sidecars are merged by **name** (the same name is the same category, ids in order of first
appearance); a sidecar whose list differs from the first one's is reported and its labels are
remapped by name, never renumbered silently. Every file is written atomically, ``OUT`` may not
be the drafts folder, lie inside it or contain it, and an existing non-empty ``OUT`` is only
written over with ``--overwrite`` (files a previous export listed in its ``clipseg-export.json``
and this one does not write are then removed; nothing else is).

Instances: an image whose sidecar names an instance file (``clipseg batch --instances``, the
review widget) is exported with it while the file's ``labels_sha256`` matches the labels; when a
person corrected the labels after the split, the corrected labels are split again with the
settings the entry records. Images without one are split with the export's ``--instances``.

A result that cannot be read (a corrupt label or instance file, labels whose shape differs from
the sidecar's or from the source image's, where that image is still reachable) is left out with
a message naming it and why; the export then exits 1.

This module reads the folder and applies the rules; :mod:`clipseg.apps.export_writer` writes the
files, :mod:`clipseg.formats.yolo` draws the YOLO polygons and
:mod:`clipseg.apps.instance_flags` parses ``--instances``. Nothing heavy is imported at import
time (``clipseg export --help`` stays fast).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, InvalidInputError
from .export_writer import MANIFEST
from .instance_flags import add_instance_arguments, canonical_names, instance_options

__all__ = ["add_subparser", "export_folder", "merge_class_tables", "ExportReport", "FORMATS",
           "MANIFEST", "LIST_LIMIT"]

FORMATS = ("coco", "masks", "yolo")
#: Drafts listed by name in a refusal (the rest are counted).
LIST_LIMIT = 20


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def add_subparser(subparsers: Any) -> None:
    """Register ``clipseg export`` on the ``clipseg`` command's subparsers."""
    p = subparsers.add_parser(
        "export", help="turn a reviewed drafts folder into COCO, masks or YOLO-seg",
        description="Export the reviewed results of a drafts folder (what `clipseg batch` "
        "writes and the review widget corrects). Drafts that are not reviewed make it refuse "
        "(listing them) unless --include-drafts; skipped images are never exported. Class "
        "tables are merged by name. Images are not copied.")
    p.add_argument("folder", type=Path, metavar="REVIEWED_DIR",
                   help="the drafts folder `clipseg batch -o` wrote, reviewed in napari "
                        "(read only)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="export folder: a new or empty one, or any with --overwrite; not the "
                        "drafts folder, nor inside it or around it")
    p.add_argument("--format", dest="formats", nargs="+", choices=FORMATS, default=["coco"],
                   help="coco: coco.json (+ coco_instances.json when there are objects); "
                        "masks: masks/REL.png, 8- or 16-bit (uint32 TIFF above 65535) + "
                        "classes.json; yolo: labels/NAME.txt (NAME: the image's name without "
                        "its extension) + data.yaml (default: coco)")
    p.add_argument("--include-drafts", action="store_true",
                   help="export images not reviewed yet as they are (skipped ones never)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing non-empty OUT: files the previous export "
                        "there listed and this one does not write are removed, others kept")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    add_instance_arguments(p, export=True)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    inst = instance_options(args, None)
    report = export_folder(args.folder, args.output, formats=tuple(dict.fromkeys(args.formats)),
                           include_drafts=args.include_drafts, overwrite=args.overwrite,
                           instances=inst, warn=lambda m: print(f"clipseg export: warning: {m}",
                                                                file=sys.stderr))
    if not args.quiet:
        print(report.text(), file=sys.stderr)
    return 1 if report.left_out else 0  # 1: some results could not be read (as batch's)


# --------------------------------------------------------------------------------------------
# reading the drafts folder
# --------------------------------------------------------------------------------------------
@dataclass
class Draft:
    """One result of the drafts folder: its ``NAME`` and sidecar."""

    base: Path
    rel: str          # NAME relative to the folder, posix ("sub/a")
    meta: dict[str, Any]
    state: str

    @property
    def file_name(self) -> str:
        """The source image's name for COCO (as the run named it), else ``REL``."""
        image = self.meta.get("image") or {}
        name = image.get("name") if isinstance(image, dict) else None
        return str(name) if name else self.rel


@dataclass
class ExportReport:
    """What an export wrote and left out."""

    output: Path
    formats: tuple[str, ...]
    exported: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # unreadable results
    objects: int = 0
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"clipseg export: {len(self.exported)} images ({', '.join(self.formats)}) to "
                 f"{self.output}; {len(self.skipped)} skipped images not exported"]
        if self.drafts:
            lines.append(f"  {len(self.drafts)} drafts (not reviewed) exported as they are "
                         "(--include-drafts)")
        if self.objects:
            lines.append(f"  {self.objects} instance objects")
        if self.left_out:
            lines.append(f"  {len(self.left_out)} results could not be read and were left out "
                         f"(see the warnings above): {', '.join(self.left_out[:LIST_LIMIT])}"
                         + (" ..." if len(self.left_out) > LIST_LIMIT else ""))
        return "\n".join(lines)


def scan(folder: Path) -> tuple[list[Draft], list[str]]:
    """Every result under ``folder`` (sorted by name) and the sidecars that could not be read."""
    from ..formats import io
    from ..formats.review import review_state

    drafts, problems = [], []
    for side in sorted(folder.rglob("*" + io.SIDECAR_SUFFIX)):
        if side.name.startswith("."):
            continue
        base = io.output_base(side)
        rel = base.relative_to(folder).as_posix()
        try:
            meta = io.read_sidecar(side)
            state = review_state(meta)
        except InvalidInputError as exc:
            problems.append(f"{rel}: {exc}")
            continue
        drafts.append(Draft(base=base, rel=rel, meta=meta, state=state))
    return drafts, problems


def merge_class_tables(tables: Sequence[tuple[str, Sequence[dict[str, Any]]]]
                       ) -> tuple[list[dict[str, Any]], dict[str, list[int]], list[str]]:
    """One class table for many sidecars, by name.

    Parameters
    ----------
    tables : sequence of (rel, classes)
        Each result's name and its sidecar ``classes`` entries (``label``, ``name``, ...).

    Returns
    -------
    merged : list of dict
        Entries with labels ``1..M`` in order of first appearance (the first table's order,
        then new names as they come); synonyms and color from the first entry of each name.
    luts : dict
        ``rel -> lut`` with ``lut[local label] = merged label`` (``lut[0] = 0``).
    warnings : list of str
        One line per distinct class list that differs from the first one, naming its files.
    """
    merged: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    luts: dict[str, list[int]] = {}
    first: list[str] | None = None
    differing: dict[tuple[str, ...], list[str]] = {}
    for rel, classes in tables:
        names = [c["name"] for c in sorted(classes, key=lambda c: c["label"])]
        if first is None:
            first = names
        elif names != first:
            differing.setdefault(tuple(names), []).append(rel)
        size = max([c["label"] for c in classes], default=0) + 1
        lut = [0] * size
        for c in sorted(classes, key=lambda c: c["label"]):
            key = c["name"]
            if key not in index:
                index[key] = len(merged) + 1
                merged.append({"label": index[key], "name": key,
                               "synonyms": list(c.get("synonyms") or [key]),
                               "color": c.get("color")})
            lut[c["label"]] = index[key]
        luts[rel] = lut
    warnings = []
    for names, rels in differing.items():
        shown = ", ".join(rels[:3]) + (f" and {len(rels) - 3} more" if len(rels) > 3 else "")
        warnings.append(f"{len(rels)} sidecars ({shown}) name the classes "
                        f"[{', '.join(names)}], not [{', '.join(first or [])}] as the first; "
                        "their labels are remapped by name into one table: "
                        + ", ".join(f"{n}={index[n]}" for n in names))
    return merged, luts, warnings


# --------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------
def _check_output(folder: Path, output: Path, overwrite: bool) -> None:
    src, out = folder.resolve(), output.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise InvalidInputError(f"-o {output}: expected an export folder apart from the drafts "
                                f"folder {folder} (neither inside the other), got one that "
                                "overlaps it; choose another folder")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"-o {output}: expected a folder, got a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(f"-o {output}: expected a new or empty folder, got one with "
                                "files in it; choose another, or pass --overwrite")


def _refusal(drafts: Sequence[str], skipped: int) -> str:
    shown = ", ".join(drafts[:LIST_LIMIT])
    more = f" and {len(drafts) - LIST_LIMIT} more" if len(drafts) > LIST_LIMIT else ""
    return (f"expected every image reviewed, got {len(drafts)} not reviewed (drafts): "
            f"{shown}{more}. Review them, or pass --include-drafts to export them as they are"
            + (f" (the {skipped} skipped are never exported)" if skipped else ""))


def export_folder(folder: str | Path, output: str | Path, *,
                  formats: Sequence[str] = ("coco",), include_drafts: bool = False,
                  overwrite: bool = False, instances: Any = None,
                  warn: Any = None) -> ExportReport:
    """Export a drafts folder (see the module docstring). Returns what was written.

    Parameters
    ----------
    folder, output : path-like
        The drafts folder (read only) and the export folder.
    formats : sequence of {"coco", "masks", "yolo"}
    include_drafts : bool
        Export drafts too (else any draft is an error listing them).
    overwrite : bool
        Allow a non-empty ``output``.
    instances : InstanceOptions, optional
        Classes to split into objects where an image has no instance file of its own.
    warn : callable, optional
        Called with each warning line (they are also in the report).
    """
    from ..formats.review import DRAFT, REVIEWED, SKIPPED

    folder, output = Path(folder), Path(output)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InvalidConfigError(f"--format: expected some of {', '.join(FORMATS)}, got "
                                 f"{', '.join(map(str, formats)) or 'none'}")
    if not folder.is_dir():
        raise InvalidInputError(f"export: expected a drafts folder (clipseg batch's output), "
                                f"got {str(folder)!r}, which is not a folder")
    _check_output(folder, output, overwrite)
    found, problems = scan(folder)
    if problems:
        raise InvalidInputError("export: expected readable sidecars, got "
                                f"{len(problems)} that are not: " + "; ".join(problems[:5]))
    if not found:
        raise InvalidInputError(f"export: expected results (NAME.clipseg.json sidecars) under "
                                f"{folder}, found none")
    report = ExportReport(output=output, formats=tuple(formats))
    report.skipped = [d.rel for d in found if d.state == SKIPPED]
    drafts = [d.rel for d in found if d.state == DRAFT]
    if drafts and not include_drafts:
        raise InvalidInputError(_refusal(drafts, len(report.skipped)))
    chosen = [d for d in found if d.state == REVIEWED or (include_drafts and d.state == DRAFT)]
    report.drafts = drafts
    if not chosen:
        raise InvalidInputError(f"export: expected at least one reviewed image, got none "
                                f"({len(report.skipped)} skipped)")

    def note(message: str) -> None:
        report.warnings.append(message)
        if warn is not None:
            warn(message)

    merged, luts, warnings = merge_class_tables([(d.rel, d.meta["classes"]) for d in chosen])
    for w in warnings:
        note(w)
    if instances is not None:  # spelled as the table spells them ("Cell" -> "cell")
        names = canonical_names(list(instances.classes), [c["name"] for c in merged],
                                "--instances")
        instances = dataclasses.replace(instances, classes=tuple(dict.fromkeys(names)))
    from .export_writer import ExportWriter

    ExportWriter(folder, output, formats, chosen, merged, luts, instances, report, note).run()
    return report
