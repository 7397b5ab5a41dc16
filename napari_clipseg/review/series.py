"""A folder of images and its folder of drafts, as one reviewable series (no Qt, no napari).

The drafts folder has the layout ``clipseg batch`` writes (:mod:`clipseg.apps.jobs`): for the
image ``IMAGES/a.jpg`` the draft is ``DRAFTS/a.png`` (or ``.tif``) with its sidecar
``DRAFTS/a.clipseg.json`` and, once a person corrected it, ``DRAFTS/a.edits.png``. Two images
whose names differ only by extension (``a.jpg``, ``a.png``) get ``a_jpg`` / ``a_png``, as in the
batch. Subfolders are listed as ``clipseg batch`` walks them (``IMAGES/sub/b.jpg`` has its draft
``DRAFTS/sub/b.png``); ``recursive=False`` lists the top level only (``clipseg batch
--no-recursive``).

Opening is cheap whatever the folder's size: the image folder is listed once with
``os.scandir`` (names only) and nothing else is read. A draft's review state
(:mod:`clipseg.formats.review`) is read from its sidecar when first asked for and kept;
:meth:`ReviewSeries.scan` reads them in small batches (the panel calls it from a timer) for the
progress count.

Classes: the series keeps one class table (:class:`ClassTable`) over all drafts. A draft whose
sidecar lists other classes, or the same in another order, is *merged by name*: a name already
in the table keeps its label, a new name is appended, and the draft's labels are remapped
through a look-up table. Nothing is renumbered silently: every such merge adds a warning to
:attr:`ReviewSeries.warnings`.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError
from clipseg.formats import io
from clipseg.formats.review import DRAFT, REVIEWED, SKIPPED, review_state, with_review_state

__all__ = ["IMAGE_EXTENSIONS", "NO_DRAFT", "ClassTable", "Item", "Loaded", "ReviewSeries",
           "ShapeMismatch", "folder_writable", "list_images"]

#: Image files listed (the same extensions ``clipseg batch`` takes).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: State shown for an image that has no draft yet (segmented on arrival).
NO_DRAFT = "no draft"
#: Files in a drafts-like folder that are never images to review.
_OUTPUT_SUFFIXES = (io.EDITS_SUFFIX, ".scores.tif")


class ShapeMismatch(InvalidInputError):
    """A draft whose label shape differs from its image (the panel skips it with a message)."""


class Item:
    """One image of the series: its display name, its file and its draft's ``NAME``.

    Paths are built when asked for (10,000 ``Path`` objects would cost more than listing the
    folder).
    """

    __slots__ = ("name", "stem", "_folder", "_drafts")

    def __init__(self, name: str, stem: str, folder: Path, drafts: Path) -> None:
        self.name, self.stem, self._folder, self._drafts = name, stem, folder, drafts

    @property
    def image(self) -> Path:
        """The image file."""
        return self._folder / self.name

    @property
    def base(self) -> Path:
        """The draft's ``NAME`` (``DRAFTS/NAME.png``, ``DRAFTS/NAME.clipseg.json``...)."""
        return self._drafts / self.stem

    def __repr__(self) -> str:
        return f"Item({self.name!r} -> {self.stem!r})"


@dataclass
class Loaded:
    """One image with its draft, ready for the viewer.

    Attributes
    ----------
    index : int
    image : (H, W, 3) ndarray, uint8 (8-bit input) or float32 in [0, 1]
    labels : (H, W) ndarray or None
        The draft in the series' table numbering; None when the image has no draft.
    edits : (H, W) bool ndarray
        The human-edit mask (all False when nobody edited it).
    meta : dict
        The draft's sidecar (without the decoded mask), or {} when there is no draft.
    warning : str
        Set when the draft's class list was merged into the table.
    """

    index: int
    image: np.ndarray
    labels: np.ndarray | None
    edits: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    warning: str = ""


def folder_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (tried for real: ``os.access`` lies for
    root and on some network file systems)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".clipseg-review-probe.", suffix=".part")
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return True


def _image_names(folder: Path, prefix: str, recursive: bool, skip: Path | None,
                 names: list[str]) -> None:
    """Append the image names under ``folder`` (``prefix`` + name), names only."""
    subfolders = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            lower = entry.name.lower()
            try:
                if lower.endswith(IMAGE_EXTENSIONS) and not lower.endswith(_OUTPUT_SUFFIXES):
                    if entry.is_file():
                        names.append(prefix + entry.name)
                elif recursive and entry.is_dir():
                    subfolders.append(entry)
            except OSError:
                continue
    for entry in subfolders:
        path = Path(entry.path)
        if skip is not None and path.resolve() == skip:
            continue  # the drafts folder inside the image folder holds no images to review
        try:
            _image_names(path, f"{prefix}{entry.name}/", recursive, skip, names)
        except OSError:
            continue  # an unreadable subfolder lists nothing


def list_images(folder: Path, drafts: Path, *, recursive: bool = True) -> list[Item]:
    """The images of ``folder`` and of its subfolders (only its own with ``recursive=False``),
    sorted by their path relative to ``folder``, each with its draft ``NAME``.

    Names only (``os.scandir``; no file is opened). Draft names follow
    :func:`clipseg.apps.jobs.discover` (``clipseg batch`` walks subfolders by default): the
    relative folder and ``stem``, or ``stem_ext`` when two images of one folder share a stem.
    Hidden files and folders, and the drafts folder when it lies inside ``folder``, are left
    out.
    """
    names: list[str] = []
    skip = drafts.resolve() if recursive else None
    _image_names(folder, "", recursive, skip, names)
    names.sort()
    stems: dict[str, int] = {}
    split = []
    for name in names:
        dot = name.rfind(".")
        stem, ext = name[:dot], name[dot + 1:].lower()
        split.append((name, stem, ext))
        stems[stem] = stems.get(stem, 0) + 1
    return [Item(name, stem if stems[stem] == 1 else f"{stem}_{ext}", folder, drafts)
            for name, stem, ext in split]


class ClassTable:
    """One class table for the whole series: ``names[k]`` has label ``k + 1``."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.colors: list[str] = []
        self.synonyms: list[list[str]] = []
        # the worker thread merges drafts while the main thread shows the table
        self.lock = threading.RLock()

    def snapshot(self) -> tuple[list[str], list[str], list[list[str]]]:
        """Copies of names, colours and synonyms taken together (safe across threads)."""
        with self.lock:
            return list(self.names), list(self.colors), [list(s) for s in self.synonyms]

    def __len__(self) -> int:
        return len(self.names)

    def label_of(self, name: str) -> int | None:
        """The label of class ``name`` (1-based), or None."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            return None

    def add(self, name: str, color: str | None = None,
            synonyms: Sequence[str] | None = None) -> int:
        """Append class ``name`` (if new); returns its label."""
        with self.lock:
            label = self.label_of(name)
            if label is not None:
                return label
            self.colors.append(color if color else io.class_colors(len(self.names) + 1)[-1])
            self.synonyms.append(list(synonyms) if synonyms else [name])
            self.names.append(name)
            return len(self.names)

    def merge(self, entries: Sequence[Mapping[str, Any]], source: str = ""
              ) -> tuple[np.ndarray, str]:
        """Merge a sidecar's class entries by name.

        Returns
        -------
        lut : (max label + 1,) int64
            ``lut[v]`` is the table label of the draft's label ``v`` (``lut[0] = 0``).
        warning : str
            Empty when the draft's list is the table's (same names, same labels); otherwise
            what was merged and remapped.
        """
        with self.lock:
            return self._merge(entries, source)

    def _merge(self, entries: Sequence[Mapping[str, Any]], source: str
               ) -> tuple[np.ndarray, str]:
        entries = sorted(entries, key=lambda c: int(c["label"]))
        empty = not self.names
        before = list(self.names)
        top = max([int(c["label"]) for c in entries], default=0)
        lut = np.zeros(top + 1, dtype=np.int64)
        for c in entries:
            lut[int(c["label"])] = self.add(str(c["name"]), c.get("color"),
                                            c.get("synonyms"))
        if empty:
            return lut, ""
        same = all(lut[int(c["label"])] == int(c["label"]) for c in entries)
        added = [n for n in self.names if n not in before]
        if same and not added:
            return lut, ""
        moved = [f"{c['name']} {int(c['label'])}->{int(lut[int(c['label'])])}" for c in entries
                 if lut[int(c["label"])] != int(c["label"])]
        parts = []
        if added:
            parts.append(f"new classes {', '.join(added)} added to the table")
        if moved:
            parts.append(f"labels remapped by name ({'; '.join(moved)})")
        missing = [n for n in before if n not in {str(c['name']) for c in entries}]
        if missing:
            parts.append(f"it does not list {', '.join(missing)}")
        where = f"{source}: " if source else ""
        return lut, (f"{where}its class list differs from the other drafts: "
                     + "; ".join(parts) + ". Saved files use the merged table.")


class ReviewSeries:
    """An image folder paired with a drafts folder; see the module docstring.

    Parameters
    ----------
    images : path-like
        The folder of images.
    drafts : path-like
        The folder ``clipseg batch -o`` wrote (created if missing, when it can be).
    writable : callable, optional
        ``Path -> bool``; default :func:`folder_writable`.
    recursive : bool
        List the images of the subfolders too (as ``clipseg batch`` does by default).
    """

    def __init__(self, images: str | os.PathLike, drafts: str | os.PathLike, *,
                 writable: Callable[[Path], bool] | None = None,
                 recursive: bool = True) -> None:
        self.images = Path(images).expanduser()
        self.drafts = Path(drafts).expanduser()
        if not self.images.is_dir():
            raise InvalidInputError(f"images: expected a folder of images, got "
                                    f"{str(self.images)!r} (not a folder)")
        if self.drafts.exists() and not self.drafts.is_dir():
            raise InvalidInputError(f"drafts: expected a folder (where `clipseg batch -o` "
                                    f"wrote), got the file {str(self.drafts)!r}")
        if self.drafts.resolve() == self.images.resolve():
            raise InvalidInputError("drafts: expected a folder other than the image folder "
                                    "(`clipseg batch` writes drafts into its own -o folder); "
                                    "choose the folder the batch wrote")
        if not self.drafts.exists():
            try:
                self.drafts.mkdir(parents=True)
            except OSError:
                pass
        self.recursive = bool(recursive)
        self.items = list_images(self.images, self.drafts, recursive=self.recursive)
        probe = writable or folder_writable
        self.writable = self.drafts.is_dir() and probe(self.drafts)
        self.table = ClassTable()
        self.warnings: list[str] = []
        self._states: dict[int, str] = {}
        self._bad: dict[int, str] = {}
        self._scanned = 0
        self._by_name: dict[str, list[int]] | None = None
        if self.items and not self.has_drafts():
            self.warnings.append(f"No drafts in {self.drafts} yet: each image is segmented "
                                 "when it opens, with the class list under Classes. Is this "
                                 "the folder `clipseg batch -o` wrote?")

    # -- the list -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]

    def find(self, text: str) -> int:
        """The index of ``text``: a 1-based position (``"12"``), an image name (``"a.jpg"``),
        its draft name (``"a"``) or a unique prefix of one.

        Raises
        ------
        InvalidInputError
            Nothing matches, or a prefix matches several images.
        """
        text = str(text).strip()
        if not text:
            raise InvalidInputError("jump to: expected a position (1..N) or an image name, "
                                    "got nothing")
        if text.isdigit():
            pos = int(text)
            if not 1 <= pos <= len(self.items):
                raise InvalidInputError(f"jump to: expected a position 1..{len(self.items)}, "
                                        f"got {pos}")
            return pos - 1
        if self._by_name is None:
            # every key an image answers to: its path, its draft name, and the same without
            # the subfolders ("plate2/a.png" is also "a.png" and "a")
            self._by_name = {}
            for i, item in enumerate(self.items):
                for key in {item.name, item.stem, item.name.rsplit("/", 1)[-1],
                            item.stem.rsplit("/", 1)[-1]}:
                    self._by_name.setdefault(key, []).append(i)
        hits = sorted(set(self._by_name.get(text, ())))
        if not hits:
            hits = sorted({i for n, ids in self._by_name.items() if n.startswith(text)
                           for i in ids})
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise InvalidInputError(f"jump to: no image called {text!r} in {self.images}")
        shown = ", ".join(self.items[i].name for i in hits[:5])
        raise InvalidInputError(f"jump to: {text!r} matches {len(hits)} images ({shown}"
                                f"{', ...' if len(hits) > 5 else ''}); type more of the name "
                                "(its subfolder too) or its position")

    def has_drafts(self, probe: int = 50) -> bool:
        """Whether any of the first ``probe`` images has a draft (a sidecar) in the drafts
        folder: False means a new or a wrong drafts folder."""
        return any(io.sidecar_path(item.base).is_file() for item in self.items[:probe])

    # -- review states ------------------------------------------------------------------------
    def has_draft(self, index: int) -> bool:
        """Whether image ``index`` has a complete draft (its sidecar exists)."""
        return io.sidecar_path(self.items[index].base).is_file()

    def state(self, index: int) -> str:
        """``"reviewed"``, ``"skipped"``, ``"draft"`` or :data:`NO_DRAFT` (read once, kept)."""
        if index not in self._states:
            self._states[index] = self._read_state(index)
        return self._states[index]

    def _read_state(self, index: int) -> str:
        side = io.sidecar_path(self.items[index].base)
        try:
            text = side.read_text(encoding="utf-8")
        except FileNotFoundError:
            return NO_DRAFT
        except OSError as exc:
            self._bad[index] = f"{side.name}: could not read it: {exc}"
            return DRAFT
        try:
            meta = json.loads(text)
            state = review_state(meta) if isinstance(meta, dict) else DRAFT
        except (json.JSONDecodeError, InvalidInputError) as exc:
            self._bad[index] = f"{side.name}: {exc}"
            return DRAFT
        classes = meta.get("classes") if isinstance(meta, dict) else None
        if isinstance(classes, list) and all(isinstance(c, dict) and "label" in c
                                             and "name" in c for c in classes):
            _lut, warning = self.table.merge(classes, self.items[index].name)
            self._warn(warning)
        return state

    def _warn(self, warning: str) -> None:
        if warning and warning not in self.warnings:
            self.warnings.append(warning)

    def scan(self, budget: int = 200) -> bool:
        """Read the review states of up to ``budget`` more images; True once all are known."""
        end = min(len(self.items), self._scanned + max(1, int(budget)))
        for i in range(self._scanned, end):
            self.state(i)
        self._scanned = end
        return self._scanned >= len(self.items)

    @property
    def scanned(self) -> int:
        """How many images (from the first) have a known state."""
        return self._scanned

    def counts(self) -> dict[str, int]:
        """Images per state among those read so far."""
        out = {REVIEWED: 0, SKIPPED: 0, DRAFT: 0, NO_DRAFT: 0}
        for state in self._states.values():
            out[state] = out.get(state, 0) + 1
        return out

    def progress_text(self) -> str:
        """``"12 of 340 reviewed, 3 skipped"`` (``"at least"`` while states are being read)."""
        counts = self.counts()
        n = len(self.items)
        exact = len(self._states) >= n
        head = f"{counts[REVIEWED]} of {n} reviewed" if exact else \
            f"at least {counts[REVIEWED]} of {n} reviewed (counting…)"
        if counts[SKIPPED]:
            head += f", {counts[SKIPPED]} skipped"
        return head

    def resume_index(self) -> int | None:
        """The first image neither reviewed nor skipped (None when every image is)."""
        for i in range(len(self.items)):
            if self.state(i) not in (REVIEWED, SKIPPED):
                return i
        return None

    def next_open(self, after: int) -> int | None:
        """The first image after ``after`` neither reviewed nor skipped, else None."""
        for i in range(after + 1, len(self.items)):
            if self.state(i) not in (REVIEWED, SKIPPED):
                return i
        return None

    # -- reading and writing ------------------------------------------------------------------
    def read_image(self, index: int) -> np.ndarray:
        """The image as the engine reads it: ``(H, W, 3)`` uint8 or float32 in [0, 1]."""
        from clipseg.apps.largeimage import open_image

        with open_image(self.items[index].image) as source:
            return np.asarray(source.read())

    def load(self, index: int) -> Loaded:
        """Image ``index`` and its draft (labels remapped into the table).

        Raises
        ------
        ShapeMismatch
            The draft's shape differs from the image's.
        InvalidInputError
            An unreadable image or draft.
        """
        item = self.items[index]
        image = self.read_image(index)
        shape = tuple(image.shape[:2])
        edits = np.zeros(shape, dtype=bool)
        if not self.has_draft(index):
            self._states.setdefault(index, NO_DRAFT)
            return Loaded(index, image, None, edits)
        labels, meta = io.read_labels(item.base)
        labels = np.asarray(labels)
        if tuple(labels.shape) != shape:
            raise ShapeMismatch(
                f"{item.name}: its draft {io.label_image_path(item.base, meta).name} is "
                f"{labels.shape[0]}x{labels.shape[1]} but the image is {shape[0]}x{shape[1]}; "
                "skipped (re-run `clipseg batch` on it, or delete the draft to segment it "
                "here)")
        mask = meta.pop("edits")
        if mask is not None:
            edits = np.asarray(mask, dtype=bool).copy()
        lut, warning = self.table.merge(meta["classes"], item.name)
        self._warn(warning)
        top = int(labels.max()) if labels.size else 0
        if top >= lut.size:
            raise InvalidInputError(f"{item.name}: its draft has label {top}, which its sidecar "
                                    f"does not name (labels 1..{lut.size - 1}); fix the draft")
        mapped = lut[labels].astype(self.label_dtype(), copy=False)
        self._states[index] = review_state(meta)
        return Loaded(index, image, mapped, edits, meta=meta, warning=warning)

    def label_dtype(self) -> np.dtype:
        """The dtype that holds every label of the table."""
        return io.label_dtype(max(len(self.table), 1))

    def save(self, index: int, labels: np.ndarray, edits: np.ndarray | None, state: str, *,
             meta: Mapping[str, Any] | None = None, model: str | None = None,
             config: Mapping[str, Any] | None = None,
             instances: tuple[np.ndarray, Any] | None = None) -> list[Path]:
        """Write image ``index``'s labels (table numbering), edit mask and review ``state``.

        Atomic, in the draft format (:func:`clipseg.formats.io.write_labels`): the class list
        written is the whole table, the model, options and image facts are those of the draft
        (``meta``), else ``model`` / ``config``. Never writes into the image folder.

        ``instances``: ``(object ids (H, W), InstanceOptions)`` to write ``NAME.instances.tif``
        (before the sidecar, which records it under ``"instances"`` as ``clipseg batch
        --instances`` does). Without it a draft's own ``"instances"`` entry is kept as it was
        (its ``labels_sha256`` tells a reader whether the labels changed since).
        """
        if not self.writable:
            raise InvalidInputError(f"{self.drafts}: the drafts folder is read-only, nothing "
                                    "was saved; choose a drafts folder you can write to")
        item = self.items[index]
        meta = dict(meta or {})
        labels = np.asarray(labels)
        if labels.shape[:2] != tuple(self._image_shape(index, meta, labels)):
            raise ShapeMismatch(f"{item.name}: labels of shape {labels.shape} do not fit the "
                                "image")
        extra: dict[str, Any] = {"review": with_review_state({}, state)["review"]}
        names, colors, synonyms = self.table.snapshot()
        listed = [c.get("name") for c in sorted(meta.get("classes", []),
                                                key=lambda c: int(c["label"]))]
        if meta.get("scores") and listed == names:
            extra["scores"] = meta["scores"]  # still the same classes, in the same order
        info = dict(meta.get("image") or {"path": str(item.image), "name": item.name})
        info.pop("shape", None)
        written: list[Path] = []
        if instances is not None:
            objects, options = instances
            path, entry = self._write_instances(item.base, objects, labels, options)
            extra["instances"] = entry
            written.append(path)
        elif isinstance(meta.get("instances"), dict):
            extra["instances"] = meta["instances"]
        if isinstance(meta.get("channels"), dict):
            extra["channels"] = meta["channels"]  # which input channels made the picture
        tiff_tags = None
        if meta.get("geo"):  # a GeoTIFF's draft stays a GeoTIFF that overlays its image
            from clipseg.formats.geo import read_georeference

            geo = read_georeference(item.image)
            if geo is not None:
                tiff_tags, extra["geo"] = geo.label_tags(), geo.sidecar()
        written += io.write_labels(item.base, labels, names, colors=colors, synonyms=synonyms,
                                  model=meta.get("model", model),
                                  config=meta.get("config", config), image_info=info,
                                  extra=extra, edits=edits, pixel_size=_pixel_size(meta),
                                  tiff_tags=tiff_tags)
        self._states[index] = state
        return written

    @staticmethod
    def _write_instances(base: Path, objects: np.ndarray, labels: np.ndarray,
                         options: Any) -> tuple[Path, dict[str, Any]]:
        import tifffile

        from clipseg.apps.batch_instances import instances_path

        data = np.asarray(objects).astype(np.uint32, copy=False)
        if data.shape != labels.shape:
            raise InvalidInputError(f"instances: expected object ids of the labels' shape "
                                    f"{labels.shape}, got {data.shape}")
        path = io.atomic_write(instances_path(base), lambda tmp: tifffile.imwrite(
            tmp, data, compression="zlib", photometric="minisblack"))
        return path, options.entry(path.name, labels, int(data.max()) if data.size else 0)

    def _image_shape(self, index: int, meta: Mapping[str, Any],
                     labels: np.ndarray) -> tuple[int, int]:
        from clipseg.apps.jobs import image_size

        size = image_size(self.items[index].image)
        return size if size is not None else tuple(labels.shape[:2])

    def bad(self, index: int) -> str:
        """Why image ``index``'s sidecar could not be read (empty when it could)."""
        return self._bad.get(index, "")


def _pixel_size(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The draft's ``pixel_size`` (µm, with its source), kept when a review rewrites it."""
    from clipseg.formats.ome import pixel_size_from_entry

    entry = meta.get("pixel_size")
    size: dict[str, Any] | None = pixel_size_from_entry(entry)  # type: ignore[assignment]
    if size is not None and isinstance(entry.get("source"), str):
        size["source"] = entry["source"]
    return size
