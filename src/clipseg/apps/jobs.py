"""What a run is made of: its jobs (one image each), its options, each job's outcome, and
which jobs are done already.

Used by ``clipseg segment`` and ``clipseg batch``. A job whose source is ``DIR/sub/a.jpg`` has
the output ``NAME`` ``OUT/sub/a`` (``OUT`` mirrors the input folders)::

    OUT/sub/a.png | a.tif      labels (PNG with palette; TIFF when tiled or > 255 classes)
    OUT/sub/a.clipseg.json     sidecar, written last (see clipseg.formats.io)
    OUT/sub/a.scores.tif       with --scores: (K, H, W) float16 probabilities (one TIFF page
                               of K bands, as GIS tools read a multiband raster)
    OUT/sub/a.instances.tif    with --instances: uint32 object ids (sidecar key "instances")
    OUT/sub/a.geojson          with --vector: one polygon per connected region (formats.geo)

:func:`is_complete` tells a finished output of the same options (``--resume``) from one to
redo; an output a person has reviewed, skipped or edited (its sidecar says so) counts as
complete whatever the options: a run never replaces it.

The modules of a run, each importing only the ones before it: this one, then
:mod:`.results` (writing one job's files), :mod:`.batch` (one job, and the checks before any
work), :mod:`.distributed` (jobs over Dask) and :mod:`.run` (a whole run).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipSegError, InvalidInputError
from ..formats import io
from ..formats.review import touched_by_a_person
from .outputs import SCORES_SUFFIX, is_tool_output, resolve_path

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec
    from .batch_instances import InstanceOptions

__all__ = ["IMAGE_EXTENSIONS", "Job", "RunOptions", "Outcome", "discover", "class_entries",
           "expected_hash", "is_complete", "job_sidecar", "kept_for_a_person", "scores_path",
           "vector_path", "image_size"]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


VECTOR_SUFFIX = ".geojson"


@dataclass(frozen=True)
class Job:
    """One image of a run: its file, its name in reports/COCO, and its output ``NAME``."""

    source: Path
    name: str
    base: Path


@dataclass(frozen=True)
class RunOptions:
    """How a run writes and where (everything that is not a :class:`SegmentConfig` option)."""

    output: Path
    scores: bool = False
    resume: bool = True
    tile_size: int = 2048
    max_pixels: int = 64_000_000
    model_configs: tuple[str, ...] = ()
    coco: Path | None = None
    progress: bool = True
    retries: int = 2
    channels: Any = None              # (r, g, b) indices or a clipseg.channels.ChannelChoice
    contrast_limits: tuple[float, float] | None = None
    vector: bool = False              # --vector: polygons as GeoJSON (see vector_path)
    vector_file: Path | None = None   # --vector FILE for a one-image run
    instances: InstanceOptions | None = None


@dataclass
class Outcome:
    """What happened to one job: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    tiled: bool = False
    detail: str = ""
    retryable: bool = False


def discover(paths: Sequence[Path], output: Path, *, recursive: bool, walk: bool) -> list[Job]:
    """Jobs for the given files (``walk=False``) or for every image under one folder.

    Outputs mirror the sources' folders relative to the folder walked (or the common folder
    of the files given). Two sources whose names differ only by extension get
    ``NAME_ext`` outputs. Files inside ``output`` are never taken as inputs; when the output
    folder is the input folder or contains it (``--allow-output-in-input``, see
    :mod:`clipseg.apps.outputs`), clipseg outputs are not taken as inputs instead.
    A path given that cannot be resolved (a symbolic link loop) is kept as it is and fails
    as its own job.
    """
    output = resolve_path(output)
    if walk:
        root = Path(paths[0])
        if not root.is_dir():
            what = ("a file (clipseg segment takes files)" if root.is_file()
                    else "which does not exist")
            raise InvalidInputError(f"expected a folder of images, got {str(root)!r}, {what}")
        root = root.resolve()
        shared = output == root or output in root.parents  # --allow-output-in-input

        def taken(p: Path) -> bool:
            if not (p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                    or p.suffix.lower() == ".zarr" and p.is_dir()):  # OME-Zarr: a folder
                return False
            if shared:
                return not is_tool_output(p)
            return output not in resolve_path(p).parents

        pattern = root.rglob("*") if recursive else root.glob("*")
        files = sorted(p for p in pattern if taken(p))
    else:
        files = [resolve_path(p) for p in paths]
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
    stems: dict[tuple[Path, str], int] = {}
    rels = [f.relative_to(root) for f in files]
    for rel in rels:
        key = (rel.parent, rel.stem)
        stems[key] = stems.get(key, 0) + 1
    jobs, seen = [], set()
    for f, rel in zip(files, rels):
        if f in seen:
            continue
        seen.add(f)
        stem = rel.stem if stems[(rel.parent, rel.stem)] == 1 else \
            f"{rel.stem}_{rel.suffix.lstrip('.').lower()}"
        jobs.append(Job(source=f, name=rel.as_posix(), base=output / rel.parent / stem))
    return jobs


def class_entries(classes: Sequence[ClassSpec]) -> tuple[list[str], list[list[str]]]:
    """Names and synonym lists of ``ClassSpec`` objects."""
    return [c.name for c in classes], [list(c.synonyms) for c in classes]


def expected_hash(config: SegmentConfig, classes: Sequence[ClassSpec]) -> str:
    """The ``config_hash`` a complete output of this run carries in its sidecar."""
    names, synonyms = class_entries(classes)
    return io.make_sidecar(names, synonyms=synonyms, config=config)["config_hash"]


def is_complete(job: Job, run_hash: str, *, scores: bool, vector: Path | None = None,
                instances: InstanceOptions | None = None) -> bool:
    """True when ``job``'s outputs exist, are complete and come from the same options
    (``vector``: the GeoJSON file the run also wants).

    An output a person reviewed, skipped or edited counts as complete whatever the options:
    a run never replaces it (see :func:`touched_by_a_person`).
    """
    meta = job_sidecar(job)
    if meta is None:
        return False  # none, or unreadable: redo the image
    if touched_by_a_person(meta) and io.label_image_path(job.base, meta).is_file():
        return True
    if meta.get("config_hash") != run_hash:
        return False
    if not io.label_image_path(job.base, meta).is_file():
        return False
    if vector is not None and not vector.is_file():
        return False
    if instances is not None:
        entry = meta.get("instances")
        if not (isinstance(entry, dict) and entry.get("classes") == list(instances.classes)
                and entry.get("min_area") == instances.min_area
                and entry.get("watershed") == instances.watershed
                and (job.base.parent / str(entry.get("file"))).is_file()):
            return False
    return not scores or scores_path(job.base).is_file()


def job_sidecar(job: Job) -> dict[str, Any] | None:
    """``job``'s existing sidecar, or None when there is none or it cannot be read."""
    side = io.find_sidecar(job.base)
    if side is None:
        return None
    try:
        return io.read_sidecar(side)
    except InvalidInputError:
        return None


def kept_for_a_person(job: Job) -> bool:
    """Whether ``job``'s result was reviewed, skipped or edited by a person (and is there):
    a run never replaces it."""
    meta = job_sidecar(job)
    return (meta is not None and touched_by_a_person(meta)
            and io.label_image_path(job.base, meta).is_file())


def scores_path(base: Path) -> Path:
    """``NAME.scores.tif`` of output ``NAME``."""
    return base.with_name(base.name + SCORES_SUFFIX)


def vector_path(job: Job, options: RunOptions) -> Path | None:
    """The GeoJSON of ``job``: ``--vector FILE`` (one-image runs), else ``NAME.geojson`` next
    to the labels; None without ``--vector``."""
    if not options.vector:
        return None
    return options.vector_file or job.base.with_name(job.base.name + VECTOR_SUFFIX)


def image_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` from the file header without decoding pixels; None if unreadable."""
    if path.suffix.lower() == ".zarr" and path.is_dir():
        from .largeimage import zarr_data

        try:
            return tuple(int(v) for v in zarr_data(path).shape[:2])  # type: ignore[return-value]
        except ClipSegError:
            return None  # the worker that opens it reports why
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                dims = dict(zip(series.axes, series.shape))
        except (OSError, ValueError, KeyError, IndexError):
            return None  # the worker that opens it reports why
        return (dims["Y"], dims["X"]) if "Y" in dims and "X" in dims else None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError, ValueError):
        return None
