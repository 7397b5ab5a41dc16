"""The files of ``clipseg export`` (:mod:`clipseg.apps.export` decides what goes out).

:class:`ExportWriter` reads each chosen result once (labels remapped into the merged table,
objects from its instance file or split here), writes its mask and YOLO files, then the COCO
documents (from the masks it wrote, re-read one image at a time, so memory stays bounded by an
image), ``classes.json``, ``data.yaml`` and last the manifest ``clipseg-export.json``. A result
that cannot be read is left out with a message (:attr:`ExportReport.left_out`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from .export import Draft, ExportReport

__all__ = ["ExportWriter", "MANIFEST"]

#: The manifest: what an export wrote (read by the next ``--overwrite``), written last.
MANIFEST = "clipseg-export.json"


@dataclass(frozen=True)
class Split:
    """How one image's objects were made: its thing labels (merged ids) and ``--min-area``."""

    things: frozenset[int] = frozenset()
    min_area: int = 0
    watershed: bool = False


class ExportWriter:
    """Writes every format for the chosen results, one image at a time (see the module)."""

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
    def load(self, d: Draft) -> tuple[Any, Any, Split]:
        """Merged labels, (objects, owner) or None, and how they were split, of one result.

        Raises :class:`InvalidInputError` (naming the result and why) for anything unreadable.
        """
        import tifffile
        from PIL import UnidentifiedImageError

        try:
            return self._load(d)
        except (OSError, UnidentifiedImageError, tifffile.TiffFileError, SyntaxError) as exc:
            # PIL reports a damaged PNG as OSError or SyntaxError, tifffile as TiffFileError
            raise InvalidInputError(f"{d.rel}: expected readable label files, got "
                                    f"{type(exc).__name__}: {exc}") from exc

    def _load(self, d: Draft) -> tuple[Any, Any, Split]:
        import numpy as np

        from ..formats import io
        from .jobs import image_size

        labels, meta = io.read_labels(d.base)
        labels = np.asarray(labels)
        source = (meta.get("image") or {}).get("path")
        if isinstance(source, str) and source and Path(source).is_file():
            size = image_size(Path(source))
            if size is not None and tuple(size) != tuple(labels.shape):
                raise InvalidInputError(
                    f"{d.rel}: its labels are {labels.shape[0]}x{labels.shape[1]} but its image "
                    f"{source} is {size[0]}x{size[1]}; re-run `clipseg batch` on it (with "
                    "--no-resume), or correct it in the review widget")
        lut = np.asarray(self.luts[d.rel], dtype=np.int64)
        if labels.size and int(labels.max()) >= lut.size:
            raise InvalidInputError(f"{d.rel}: expected labels within its sidecar's "
                                    f"{lut.size - 1} classes, got {int(labels.max())}")
        merged = lut[labels].astype(io.label_dtype(len(self.merged)))
        return (merged, *self._objects(d, meta, labels, merged))

    def _objects(self, d: Draft, meta: dict[str, Any], labels: Any, merged: Any
                 ) -> tuple[Any, Split]:
        import tifffile

        from ..instances import instance_map, labels_digest, owner_of

        entry = meta.get("instances")
        names = [c["name"] for c in self.merged]

        def split_of(classes: Any, min_area: Any, watershed: Any = False) -> Split:
            things = frozenset(names.index(str(n)) + 1 for n in classes if str(n) in names)
            return Split(things, int(min_area), bool(watershed))

        split = None
        if isinstance(entry, dict) and entry.get("file"):
            path = d.base.parent / str(entry["file"])
            if not path.is_file():
                raise InvalidInputError(f"{d.rel}: its sidecar names the instance file "
                                        f"{entry['file']}, which is missing")
            split = split_of(entry.get("classes", []), entry.get("min_area", 0),
                             entry.get("watershed", False))
            if entry.get("labels_sha256") == labels_digest(labels):
                objects = tifffile.imread(path)
                if objects.shape != merged.shape:
                    raise InvalidInputError(f"{path}: expected instances of the labels' shape "
                                            f"{merged.shape}, got {objects.shape}")
                owner = owner_of(objects, merged)
                things = split.things | {int(v) for v in owner[1:] if v}
                return (objects, owner), Split(frozenset(things), split.min_area,
                                               split.watershed)
            self.restale += 1  # labels corrected after the split: split the corrected labels
        elif self.instances is not None:
            split = split_of(self.instances.classes, self.instances.min_area,
                             self.instances.watershed)
        if split is None:
            return None, Split()
        return instance_map(merged, sorted(split.things), min_area=split.min_area,
                            watershed=split.watershed), split

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> None:
        import numpy as np

        from ..formats import io

        previous = self._previous_manifest()
        self.output.mkdir(parents=True, exist_ok=True)
        # (file_name, mask, instance mask or None) of each image, re-read for COCO
        images: list[tuple[str, Path, Path | None]] = []
        thing_ids: set[int] = set()
        masks = "coco" in self.formats or "masks" in self.formats
        yolo_names = self._yolo_names()
        for d in self.chosen:
            try:
                merged, objects, split = self.load(d)
            except InvalidInputError as exc:
                self.report.left_out.append(d.rel)
                self.note(f"not exported: {exc}")
                continue
            if objects is not None:
                owner = objects[1]
                thing_ids.update(int(v) for v in owner[1:] if v)
                self.report.objects += int(np.count_nonzero(owner[1:]))
            if masks:
                mask_path = self._write_mask(d.rel, merged)
                obj_path = None
                if objects is not None:
                    obj_path = self._write_mask(d.rel + ".instances", objects[0])
                    self._write_owner(obj_path, objects[1])
                images.append((d.file_name, mask_path, obj_path))
            if "yolo" in self.formats:
                self._write_yolo(yolo_names[d.rel], merged, objects, split)
            self.report.exported.append(d.rel)
        if not self.report.exported:
            raise InvalidInputError(f"export: expected at least one readable result, got none "
                                    f"of {len(self.chosen)}: " + "; ".join(
                                        self.report.warnings[-5:]))
        if self.restale:
            self.note(f"{self.restale} images had instance files older than their corrected "
                      "labels; their instances were split again from the reviewed labels with "
                      "the recorded settings")
        if "coco" in self.formats:
            self._write_coco(images, thing_ids)
        if "masks" in self.formats:
            self._done(io.atomic_write_text(self.output / "masks" / "classes.json",
                                            json.dumps({"classes": self.merged}, indent=2)
                                            + "\n"))
        if "yolo" in self.formats:
            self._write_data_yaml()
        self._finish(previous)

    # -- masks (also the cache COCO reads back) ------------------------------------------------
    def _mask_root(self) -> Path:
        return self.output / ("masks" if "masks" in self.formats else ".clipseg-export-tmp")

    def _write_mask(self, rel: str, arr: Any) -> Path:
        import numpy as np

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
        self._write(path, write)
        return path

    def _write(self, path: Path, write: Any) -> None:
        """An output atomically; COCO's scratch copy (no masks asked for) plainly."""
        from ..formats import io

        if "masks" in self.formats:
            io.atomic_write(path, write)
        else:  # removed at the end: no fsync and rename needed, half the time of COCO alone
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        self._done(path)

    def _write_owner(self, obj_path: Path, owner: Any) -> None:
        """The class of each object id, beside the instance mask."""
        path = obj_path.with_name(obj_path.name.rsplit(".", 1)[0] + ".json")
        text = json.dumps({"class_of_id": [int(v) for v in owner]}) + "\n"
        self._write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

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
    def _write_coco(self, images: list[tuple[str, Path, Path | None]],
                    thing_ids: set[int]) -> None:
        import numpy as np

        from ..formats.coco import write_coco, write_coco_instances

        self._done(write_coco(self.output / "coco.json", self.merged,
                              ((name, self._read_mask(mask)) for name, mask, _ in images)))
        if not any(obj is not None for _, _, obj in images):
            return
        things = [c for c in self.merged if c["label"] in thing_ids]

        def objects():
            for name, mask, obj in images:
                if obj is None:  # no instances in this image: listed, with no annotation
                    shape = self._read_mask(mask).shape
                    yield name, np.zeros(shape, np.int32), np.zeros(1, np.int32)
                    continue
                owner_file = obj.with_name(obj.name.rsplit(".", 1)[0] + ".json")
                owner = json.loads(owner_file.read_text(encoding="utf-8"))["class_of_id"]
                yield name, self._read_mask(obj), np.asarray(owner, np.int32)

        self._done(write_coco_instances(self.output / "coco_instances.json", things,
                                        objects()))

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

    def _write_yolo(self, stem: str, merged: Any, objects: Any, split: Split) -> None:
        from ..formats import io
        from ..formats.yolo import yolo_lines

        lines = yolo_lines(merged, objects, things=split.things, min_area=split.min_area)
        path = self.output / "labels" / (stem + ".txt")
        self._done(io.atomic_write_text(path, "".join(line + "\n" for line in lines)))

    def _write_data_yaml(self) -> None:
        from ..formats import io
        from ..formats.yolo import data_yaml

        self._done(io.atomic_write_text(self.output / "data.yaml", data_yaml(self.merged)))

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
        for old in sorted(set(previous) - set(rels) - {MANIFEST}):
            target = (out / old).resolve()
            if out in target.parents and target.is_file():
                target.unlink()  # a file the previous export wrote and this one does not
                for folder in target.parents:  # and its folders, once empty
                    if folder == out or any(folder.iterdir()):
                        break
                    folder.rmdir()
        self.report.files = rels
        doc = {"source": str(self.folder.resolve()), "formats": list(self.formats),
               "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "images": self.report.exported, "drafts_included": self.report.drafts,
               "skipped": self.report.skipped, "left_out": self.report.left_out,
               "classes": self.merged, "files": rels}
        io.atomic_write_text(self.output / MANIFEST, json.dumps(doc, indent=2) + "\n")


