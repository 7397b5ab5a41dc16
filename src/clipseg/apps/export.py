"""``clipseg export``: a reviewed drafts folder as COCO, per-image masks and YOLO-seg labels.

The drafts folder is what ``clipseg batch`` writes (and the review widget corrects): one
label image + ``NAME.clipseg.json`` sidecar per image, the sidecar recording the review state
(:mod:`clipseg.formats.review`) and, with ``--instances``, an instance file. The export::

    OUT/coco.json               semantic: one annotation per (image, class present)
    OUT/coco_instances.json     instances: one annotation per object (iscrowd 0)
    OUT/masks/REL.png|.tif      semantic labels, values = the merged category ids
    OUT/masks/REL.instances.png|.tif   object ids, where the image has instances
    OUT/masks/classes.json      the merged class table
    OUT/labels/REL.txt          YOLO-seg: "class x1 y1 x2 y2 ..." per object, normalised
    OUT/data.yaml               YOLO's class names (the images are not copied)
    OUT/clipseg-export.json     what was written, from which folder (written last)

Rules: only *reviewed* images are exported; drafts make the export refuse (exit 2, listing
them) unless ``--include-drafts``; *skipped* images are never exported. The class tables of
all sidecars are merged by **name** (the same name is the same category, ids in order of first
appearance); a sidecar whose list differs from the first one's is reported and its labels are
remapped by name, never renumbered silently. Every file is written atomically, ``OUT`` may not
be the drafts folder or lie inside it, and an existing non-empty ``OUT`` is only written over
with ``--overwrite`` (files a previous export listed in its ``clipseg-export.json`` and this
one does not write are then removed; nothing else is).

This module imports nothing heavy at import time (``clipseg export --help`` stays fast); it
also holds the ``--instances`` flags shared with ``clipseg segment``/``batch``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, InvalidInputError

__all__ = ["add_instance_arguments", "instance_options", "add_subparser", "export_folder",
           "merge_class_tables", "FORMATS"]

FORMATS = ("coco", "masks", "yolo")
MANIFEST = "clipseg-export.json"
#: Drafts listed by name in a refusal (the rest are counted).
LIST_LIMIT = 20


# --------------------------------------------------------------------------------------------
# --instances, shared with segment/batch
# --------------------------------------------------------------------------------------------
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
    """The :class:`clipseg.apps.batch.InstanceOptions` of the flags, or None without them.

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
    p.add_argument("folder", type=Path, metavar="REVIEWED_DIR")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="export folder (must not exist, be empty, or take --overwrite)")
    p.add_argument("--format", dest="formats", nargs="+", choices=FORMATS, default=["coco"],
                   help="coco: coco.json + coco_instances.json; masks: masks/REL.png (TIFF "
                        "when labels > 65535); yolo: labels/REL.txt + data.yaml "
                        "(default: coco)")
    p.add_argument("--include-drafts", action="store_true",
                   help="export images not reviewed yet as they are (skipped ones never)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing non-empty OUT")
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
    return 0


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
        for c in classes:
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
            f"{shown}{more}. Review them, or pass --include-drafts to export them as they are "
            f"({skipped} skipped images are never exported)")


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
    if instances is not None:
        canonical_names(list(instances.classes), [c["name"] for c in merged], "--instances")
    _Writer(folder, output, formats, chosen, merged, luts, instances, report, note).run()
    return report


class _Writer:
    """Writes every format for the chosen results, one image at a time."""

    def __init__(self, folder: Path, output: Path, formats: Sequence[str],
                 chosen: Sequence[Draft], merged: list[dict[str, Any]],
                 luts: dict[str, list[int]], instances: Any, report: ExportReport,
                 note: Any) -> None:
        self.folder, self.output, self.formats = folder, output, tuple(formats)
        self.chosen, self.merged, self.luts = chosen, merged, luts
        self.instances, self.report, self.note = instances, report, note
        self.written: list[Path] = []
        self.restale = 0

    # -- per image ---------------------------------------------------------------------------
    def load(self, d: Draft) -> tuple[Any, Any, Any]:
        """Merged labels, and (objects, owner) or None, of one result."""
        import numpy as np

        from ..formats import io

        labels, meta = io.read_labels(d.base)
        labels = np.asarray(labels)
        lut = np.asarray(self.luts[d.rel], dtype=np.int64)
        if labels.size and int(labels.max()) >= lut.size:
            raise InvalidInputError(f"{d.rel}: expected labels within its sidecar's "
                                    f"{lut.size - 1} classes, got {int(labels.max())}")
        merged = lut[labels].astype(io.label_dtype(len(self.merged)))
        return merged, self._objects(d, meta, labels, merged), meta

    def _objects(self, d: Draft, meta: dict[str, Any], labels: Any, merged: Any) -> Any:
        import tifffile

        from ..instances import instance_map, labels_digest, owner_of

        entry = meta.get("instances")
        names = [c["name"] for c in self.merged]
        settings = None
        if isinstance(entry, dict) and entry.get("file"):
            path = d.base.parent / str(entry["file"])
            if not path.is_file():
                raise InvalidInputError(f"{d.rel}: its sidecar names the instance file "
                                        f"{entry['file']}, which is missing")
            if entry.get("labels_sha256") == labels_digest(labels):
                objects = tifffile.imread(path)
                if objects.shape != merged.shape:
                    raise InvalidInputError(f"{path}: expected instances of the labels' shape "
                                            f"{merged.shape}, got {objects.shape}")
                return objects, owner_of(objects, merged)
            self.restale += 1  # labels corrected after the split: split the corrected labels
            settings = ([str(n) for n in entry.get("classes", [])],
                        int(entry.get("min_area", 0)), bool(entry.get("watershed", False)))
        elif self.instances is not None:
            settings = (list(self.instances.classes), self.instances.min_area,
                        self.instances.watershed)
        if settings is None:
            return None
        things = [names.index(n) + 1 for n in settings[0] if n in names]
        return instance_map(merged, things, min_area=settings[1], watershed=settings[2])

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> None:
        from ..formats import io

        previous = self._previous_manifest()
        self.output.mkdir(parents=True, exist_ok=True)
        semantic: list[tuple[str, str]] = []  # (file_name, masks path) for COCO, re-read
        inst_images: list[tuple[str, Path, Path | None]] = []
        thing_ids: set[int] = set()
        yolo_names = self._yolo_names()
        for d in self.chosen:
            merged, objects, _ = self.load(d)
            mask_path = self._write_mask(self._cache_name(d), merged)
            semantic.append((d.file_name, mask_path))
            obj_path = None
            if objects is not None:
                obj, owner = objects
                obj_path = self._write_mask(self._cache_name(d) + ".instances", obj)
                self._write_owner(obj_path, owner)
                thing_ids.update(int(v) for v in owner[1:] if v)
                self.report.objects += int(obj.max()) if obj.size else 0
            inst_images.append((d.file_name, mask_path, obj_path))
            if "yolo" in self.formats:
                self._write_yolo(yolo_names[d.rel], merged, objects)
            self.report.exported.append(d.rel)
        if self.restale:
            self.note(f"{self.restale} images had instance files older than their corrected "
                      "labels; their instances were split again from the reviewed labels with "
                      "the recorded settings")
        if "coco" in self.formats:
            self._write_coco(semantic, inst_images, thing_ids)
        if "masks" in self.formats:
            self._done(io.atomic_write_text(self.output / "masks" / "classes.json",
                                            json.dumps({"classes": self.merged}, indent=2)
                                            + "\n"))
        if "yolo" in self.formats:
            self._write_data_yaml()
        self._finish(previous)

    # -- masks (also the cache COCO reads back) ------------------------------------------------
    def _cache_name(self, d: Draft) -> str:
        return d.rel

    def _mask_root(self) -> Path:
        return self.output / ("masks" if "masks" in self.formats else ".clipseg-export-tmp")

    def _write_mask(self, rel: str, arr: Any) -> Path:
        import numpy as np

        from ..formats import io

        data = np.asarray(arr)
        top = int(data.max()) if data.size else 0
        root = self._mask_root()
        if top <= 65535:
            path = root / (rel + ".png")
            dtype = np.uint8 if top <= 255 else np.uint16

            def write(tmp: Path) -> None:
                from PIL import Image

                Image.fromarray(np.ascontiguousarray(data, dtype=dtype)).save(tmp, format="PNG")
        else:
            path = root / (rel + ".tif")

            def write(tmp: Path) -> None:
                import tifffile

                tifffile.imwrite(tmp, data.astype(np.uint32), compression="zlib",
                                 photometric="minisblack")
        io.atomic_write(path, write)
        self._done(path)
        return path

    def _write_owner(self, obj_path: Path, owner: Any) -> None:
        """The class of each object id, beside the instance mask."""
        from ..formats import io

        path = obj_path.with_name(obj_path.name.rsplit(".", 1)[0] + ".json")
        io.atomic_write_text(path, json.dumps({"class_of_id": [int(v) for v in owner]}) + "\n")
        self._done(path)

    @staticmethod
    def _read_mask(path: Path) -> Any:
        import numpy as np

        if path.suffix == ".tif":
            import tifffile

            return tifffile.imread(path)
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img).copy()

    # -- COCO ----------------------------------------------------------------------------------
    def _write_coco(self, semantic: list[tuple[str, Path]],
                    inst_images: list[tuple[str, Path, Path | None]],
                    thing_ids: set[int]) -> None:
        import numpy as np

        from ..formats.coco import write_coco, write_coco_instances

        self._done(write_coco(self.output / "coco.json", self.merged,
                              ((name, self._read_mask(p)) for name, p in semantic)))
        if not any(obj is not None for _, _, obj in inst_images):
            return
        things = [c for c in self.merged if c["label"] in thing_ids]

        def images():
            for name, mask, obj in inst_images:
                if obj is None:
                    shape = self._read_mask(mask).shape
                    yield name, np.zeros(shape, np.int32), np.zeros(1, np.int32)
                    continue
                owner_file = obj.with_name(obj.name.rsplit(".", 1)[0] + ".json")
                owner = json.loads(owner_file.read_text(encoding="utf-8"))["class_of_id"]
                yield name, self._read_mask(obj), np.asarray(owner, np.int32)

        self._done(write_coco_instances(self.output / "coco_instances.json", things, images()))

    # -- YOLO ----------------------------------------------------------------------------------
    def _yolo_names(self) -> dict[str, str]:
        """``labels/STEM.txt`` names: the image's name without extension, unique."""
        names: dict[str, str] = {}
        seen: dict[str, str] = {}
        for d in self.chosen:
            stem = Path(d.file_name).with_suffix("").as_posix()
            if stem in seen:
                self.note(f"{d.file_name} and {seen[stem]} share the name {stem}; YOLO pairs "
                          f"images/{stem}.* with labels/{stem}.txt, so {d.file_name}'s labels "
                          f"are written as labels/{d.rel}.txt: rename one of the images")
                stem = d.rel
            seen[stem] = d.file_name
            names[d.rel] = stem
        return names

    def _write_yolo(self, stem: str, merged: Any, objects: Any) -> None:
        from ..formats import io

        lines = yolo_lines(merged, objects, min_area=self.instances.min_area
                           if self.instances is not None else 0)
        path = self.output / "labels" / (stem + ".txt")
        self._done(io.atomic_write_text(path, "".join(line + "\n" for line in lines)))

    def _write_data_yaml(self) -> None:
        from ..formats import io

        lines = ["# clipseg export: YOLO segmentation labels (labels/NAME.txt: one object a line,",
                 "# 'class x1 y1 x2 y2 ...', polygon corners normalised to 0..1).",
                 "# The images are not copied: put (or link) them in images/ beside labels/,",
                 "# with the same relative names (labels/sub/a.txt <-> images/sub/a.jpg).",
                 "path: .", "train: images", "val: images", f"nc: {len(self.merged)}",
                 "names:"]
        lines += [f"  {c['label'] - 1}: {json.dumps(c['name'])}" for c in self.merged]
        self._done(io.atomic_write_text(self.output / "data.yaml", "\n".join(lines) + "\n"))

    # -- bookkeeping -----------------------------------------------------------------------------
    def _done(self, path: Path) -> None:
        self.written.append(Path(path))

    def _previous_manifest(self) -> list[str]:
        path = self.output / MANIFEST
        if not path.is_file():
            return []
        try:
            files = json.loads(path.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [f for f in files if isinstance(f, str)]

    def _finish(self, previous: list[str]) -> None:
        import datetime as dt
        import shutil

        from ..formats import io

        tmp_root = self.output / ".clipseg-export-tmp"
        if tmp_root.exists():
            shutil.rmtree(tmp_root)  # the COCO cache when masks were not asked for
        out = self.output.resolve()
        rels = sorted({p.resolve().relative_to(out).as_posix() for p in self.written
                       if tmp_root.resolve() not in p.resolve().parents})
        for old in set(previous) - set(rels) - {MANIFEST}:
            target = (out / old).resolve()
            if out in target.parents and target.is_file():
                target.unlink()  # a file the previous export wrote and this one does not
        self.report.files = rels
        doc = {"source": str(self.folder.resolve()), "formats": list(self.formats),
               "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "images": self.report.exported, "drafts_included": self.report.drafts,
               "skipped": self.report.skipped, "classes": self.merged, "files": rels}
        io.atomic_write_text(self.output / MANIFEST, json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# YOLO polygons
# --------------------------------------------------------------------------------------------
def yolo_lines(labels: Any, objects: Any = None, *, min_area: int = 0) -> list[str]:
    """YOLO-seg lines of one image: ``"class x1 y1 x2 y2 ..."`` per object, in 0..1.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Merged semantic labels (class ``k`` -> YOLO class ``k - 1``).
    objects : (instances, owner), optional
        Objects of the thing classes; those classes are written one line per object, every
        other class one line per connected region.
    min_area : int
        Regions of fewer pixels are left out.

    Each line is the outer boundary of one connected piece (:func:`skimage.measure.find_contours`
    at 0.5, simplified to half a pixel); holes are not represented (YOLO polygons have none).
    """
    import numpy as np

    from ..instances import split_instances

    lab = np.asarray(labels)
    height, width = lab.shape
    lines: list[str] = []
    done_classes: set[int] = set()
    if objects is not None:
        inst, owner = objects
        inst = np.asarray(inst)
        owner = np.asarray(owner)
        done_classes = {int(v) for v in owner[1:] if v}
        lines += _object_lines(inst, owner, height, width, min_area)
    for cls in (int(v) for v in np.unique(lab) if v and int(v) not in done_classes):
        regions = split_instances(lab == cls, min_area=min_area)
        owner = np.full(int(regions.max()) + 1, cls, dtype=np.int32)
        lines += _object_lines(regions, owner, height, width, 0)
    return lines


def _object_lines(objects: Any, owner: Any, height: int, width: int,
                  min_area: int) -> list[str]:
    import numpy as np
    from scipy.ndimage import find_objects
    from skimage.measure import approximate_polygon, find_contours, label

    out: list[str] = []
    arr = np.asarray(objects)
    if not arr.size or not arr.max():
        return out
    for obj, box in enumerate(find_objects(arr), start=1):
        cls = int(owner[obj]) if obj < len(owner) else 0
        if box is None or not cls:
            continue
        y0, x0 = box[0].start, box[1].start
        crop = arr[box] == obj
        pieces = label(crop, connectivity=2)
        for piece in range(1, int(pieces.max()) + 1):
            part = pieces == piece
            if part.sum() < max(1, min_area):
                continue
            padded = np.pad(part, 1).astype(np.float32)
            contours = find_contours(padded, 0.5)
            if not contours:
                continue
            ring = max(contours, key=len)
            ring = approximate_polygon(ring, tolerance=0.5)
            if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
                ring = ring[:-1]
            if len(ring) < 3:
                continue
            ys = np.clip((ring[:, 0] - 1 + y0 + 0.5) / height, 0.0, 1.0)
            xs = np.clip((ring[:, 1] - 1 + x0 + 0.5) / width, 0.0, 1.0)
            coords = " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys))
            out.append(f"{cls - 1} {coords}")
    return out
