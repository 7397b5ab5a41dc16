"""Running many images: finding them, naming outputs, resuming, writing, summarising.

Used by ``clipseg segment`` and ``clipseg batch`` (serially here, or over Dask with
:mod:`clipseg.apps.distributed`). One image is one *job*; :func:`process_job` does all of it (read,
segment, write atomically) and never raises for a bad image: it returns a failed
:class:`Outcome` with the reason, and the run goes on.

Output of a job whose source is ``DIR/sub/a.jpg`` (``OUT`` mirrors the input folders)::

    OUT/sub/a.png | a.tif      labels (PNG with palette; TIFF when tiled or > 255 classes)
    OUT/sub/a.clipseg.json     sidecar, written last (see clipseg.formats.io)
    OUT/sub/a.scores.tif       with --scores: (K, H, W) float16 probabilities (one TIFF page
                               of K bands, as GIS tools read a multiband raster)
    OUT/sub/a.instances.tif    with --instances: uint32 object ids (sidecar key "instances")
    OUT/sub/a.geojson          with --vector: one polygon per connected region (formats.geo)

A GeoTIFF input's georeferencing (:func:`clipseg.formats.geo.read_georeference`) is copied to
the label TIFF (always a TIFF then) and the scores file, recorded in the sidecar as ``"geo"``,
and its no-data pixels become label 0. A microscopy input's physical pixel size (OME-TIFF,
ImageJ TIFF: :func:`clipseg.formats.ome.read_spatial`) goes the same way: into the label TIFF
(a TIFF then) as OME-XML and resolution tags, the scores file, and the sidecar's
``"pixel_size"``; the channels chosen with ``--channels`` are recorded as ``"channels"``.

Every sidecar a run writes records the review state "draft" (:mod:`clipseg.formats.review`).
An output a person has reviewed, skipped or edited (its sidecar says so) is never replaced:
the run reports it as skipped, whatever the options.
"""
from __future__ import annotations

import math
import os
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import remove_leftovers
from ..errors import ClipSegError, InvalidConfigError, InvalidInputError
from ..formats import io
from ..resolve import resolve_config
from .batch_instances import (
    InstanceOptions,
    coco_instances_path,
    touched_by_a_person,
    write_instances,
    write_run_coco_instances,
)
from .outputs import SCORES_SUFFIX, describe_os_error, is_tool_output, resolve_path

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec

FAILURE_LOG = "clipseg-failures.log"
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


@dataclass
class Summary:
    """All outcomes of a run and its wall time."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    coco: Path | None = None
    errors: list[str] = field(default_factory=list)  # run-level I/O errors (COCO, log)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self) -> str:
        """Human-readable end-of-run summary."""
        lines = [f"clipseg: {len(self.outcomes)} images: {self.count('done')} segmented, "
                 f"{self.count('skipped')} skipped (already complete), "
                 f"{len(self.failures)} failed; {self.seconds:.1f} s"]
        kept = sum(o.status == "skipped" and bool(o.reason) for o in self.outcomes)
        if kept:
            lines.append(f"  {kept} of the skipped were reviewed or edited by a person: kept")
        lines += [f"  FAILED {o.name}: {o.reason}" for o in self.failures]
        lines += [f"  ERROR {e}" for e in self.errors]
        if self.coco is not None:
            lines.append(f"  COCO JSON: {self.coco}")
        if self.errors:
            lines.append("  the label images and sidecars written before are complete")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# finding images and naming outputs
# --------------------------------------------------------------------------------------------
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
            raise InvalidInputError(f"batch: expected a folder of images, got {str(root)!r}")
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
    meta = _job_sidecar(job)
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


def _draft(side: dict[str, Any]) -> dict[str, Any]:
    from ..formats.review import DRAFT, with_review_state

    return with_review_state(side, DRAFT)


def scores_path(base: Path) -> Path:
    """``NAME.scores.tif`` of output ``NAME``."""
    return base.with_name(base.name + SCORES_SUFFIX)


def vector_path(job: Job, options: RunOptions) -> Path | None:
    """The GeoJSON of ``job``: ``--vector FILE`` (one-image runs), else ``NAME.geojson`` next
    to the labels; None without ``--vector``."""
    if not options.vector:
        return None
    return options.vector_file or job.base.with_name(job.base.name + VECTOR_SUFFIX)


def _scores_tiff_kwargs(k: int, tiff_tags: Sequence[tuple] | None,
                        pixel_size: dict[str, Any] | None = None) -> dict[str, Any]:
    """One page of ``k`` bands (planar), the label tags less GDAL_NODATA (labels only) and
    the pixel size as resolution tags."""
    from ..formats.ome import tiff_kwargs

    tags = [t for t in tiff_tags or () if t[0] != 42113]
    size = tiff_kwargs(pixel_size)
    return {"photometric": "minisblack", "extratags": tags,
            **({"planarconfig": "separate"} if k > 1 else {}),
            **{key: size[key] for key in ("resolution", "resolutionunit") if key in size}}


def spatial_outputs(source: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(pixel size or None, sidecar extra)`` of an open input (:mod:`clipseg.formats.ome`):
    its physical pixel size and which of its channels became r, g, b."""
    entry = source.channel_entries()
    return source.pixel_size(), ({"channels": entry} if entry is not None else {})


def geo_outputs(job: Job) -> tuple[Any, list[tuple] | None, dict[str, Any]]:
    """``(GeoReference or None, label tiff_tags or None, sidecar extra)`` of ``job``'s input."""
    from ..formats.geo import read_georeference

    geo = read_georeference(job.source)
    if geo is None:
        return None, None, {}
    return geo, geo.label_tags(), {"geo": geo.sidecar()}


def write_vector(job: Job, options: RunOptions, classes: Sequence[ClassSpec], geo: Any) -> None:
    """With ``--vector``: polygons of ``job``'s written labels to :func:`vector_path`."""
    target = vector_path(job, options)
    if target is None:
        return
    from ..formats.geo import write_geojson

    labels, _ = io.read_labels(job.base, lazy=True)
    write_geojson(target, np.asarray(labels), [c.name for c in classes], geo, name=job.name)


# --------------------------------------------------------------------------------------------
# one job
# --------------------------------------------------------------------------------------------
_SEGMENTERS: dict[int, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def segmenter_for(config: SegmentConfig) -> Any:
    """A :class:`clipseg.pipeline.Segmenter` for ``config``, kept per thread.

    The model loads once per process and thread (a Dask worker thread keeps its own) and is
    reused for every image; only the last config of each thread is kept, so a long-lived
    process does not pile up models.
    """
    from ..pipeline import Segmenter

    thread = threading.get_ident()
    with _LOCK:
        held = _SEGMENTERS.get(thread)
    if held is not None and held[0] == config:
        return held[1]
    seg = Segmenter(config)
    with _LOCK:
        _SEGMENTERS[thread] = (config, seg)
    return seg


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


def wants_tiling(shape: tuple[int, int], config: SegmentConfig, options: RunOptions) -> bool:
    """Tiled at native resolution: ``short_side`` 0 (resolved) and a side above ``tile_size``."""
    return (resolve_config(config).window.short_side == 0 and options.tile_size > 0
            and max(shape) > options.tile_size)


def process_job(job: Job, config: SegmentConfig, classes: Sequence[ClassSpec], options: RunOptions,
                run_hash: str) -> Outcome:
    """Segment one image and write its outputs; a failure becomes a failed :class:`Outcome`."""
    start = time.perf_counter()
    if _kept_for_a_person(job):
        return Outcome(job.name, "skipped", "reviewed or edited by a person: not replaced")
    if options.resume and is_complete(job, run_hash, scores=options.scores,
                                      vector=vector_path(job, options),
                                      instances=options.instances):
        return Outcome(job.name, "skipped")
    try:
        tiled = _segment_and_write(job, config, classes, options)
    except Exception as exc:  # one bad image must not stop the run: reported in the summary
        reason = (f"{type(exc).__name__}: {describe_os_error(exc)}" if isinstance(exc, OSError)
                  else f"{type(exc).__name__}: {exc}")
        return Outcome(job.name, "failed", reason,
                       time.perf_counter() - start, detail=traceback.format_exc(),
                       retryable=not isinstance(exc, ClipSegError))
    return Outcome(job.name, "done", seconds=time.perf_counter() - start, tiled=tiled)


def remove_job_leftovers(job: Job) -> list[Path]:
    """Delete the temp files a killed run left for ``job``'s outputs (``.NAME.tif.XXXX.part``,
    the whole label image of a tiled run); only this tool's temp names for this job's files."""
    from .outputs import job_paths

    return [p for path in job_paths(job.base) for p in remove_leftovers(path)]


def _segment_and_write(job: Job, config: SegmentConfig, classes: Sequence[ClassSpec],
                       options: RunOptions) -> bool:
    from ..formats.geo import mask_nodata
    from .largeimage import open_image

    geo, tags, extra = geo_outputs(job)
    nodata = geo.nodata if geo is not None else None
    with open_image(job.source, channels=options.channels,
                    contrast_limits=options.contrast_limits) as source:
        pixel_size, more = spatial_outputs(source)
        extra = {**extra, **more}
        if wants_tiling(source.shape, config, options):
            from .largeimage import pamr_halo, plan_tiles, segment_tile

            window = resolve_config(config).window
            crop, stride = window.crop, window.stride
            tiles = plan_tiles(*source.shape, options.tile_size, crop, stride, pamr_halo(config))
            segmenter = segmenter_for(config)
            source.contrast_limits()  # scan once, before the tiles
            results = ((t, segment_tile(segmenter, source, t, classes, scores=options.scores))
                       for t in tiles)
            write_tiled(job, source.shape, config, classes, options, results,
                        image_info=_info(job, source), tiff_tags=tags, extra=extra,
                        nodata=nodata, pixel_size=pixel_size)
            write_vector(job, options, classes, geo)
            return True
        refusal = job_refusal(job, source.shape, config, classes, options)
        if refusal is not None:  # before the pixels are decoded
            raise refusal
        image = source.read()
        info = _info(job, source)
        keep = None
        if nodata is not None:
            keep = np.ones(source.shape, bool)  # False where the input is no-data
            mask_nodata(keep, source.data, nodata)
    segmenter = segmenter_for(config)
    result = segmenter.segment(image, classes)
    segmenter.clear_cache()  # no relabelling here: do not keep the image and its windows
    del image
    labels = result.labels if keep is None or keep.all() else np.where(keep, result.labels, 0)
    write_result(job, labels, result.probs if options.scores else None, config, classes,
                 model_name=result.model_name, image_info=info, tiff_tags=tags, extra=extra,
                 instances=options.instances, pixel_size=pixel_size)
    write_vector(job, options, classes, geo)
    return False


# --------------------------------------------------------------------------------------------
# checks before any work: options against the model, the first image, the memory
# --------------------------------------------------------------------------------------------
def _num_maps(config: SegmentConfig, classes: Sequence[ClassSpec]) -> int:
    if config.labels.synonym_reduce == "softmax_then_max":
        return sum(len(c.synonyms) for c in classes)
    return len(classes)


def job_refusal(job: Job, shape: tuple[int, int], config: SegmentConfig,
                classes: Sequence[ClassSpec], options: RunOptions, *,
                facts: Any = None, check_budget: bool = True) -> ClipSegError | None:
    """Why ``job`` (an image of ``shape``) cannot run with these options, or None.

    Checked before any pixel is decoded: an untiled image and its working image (the image
    resized to ``short_side``) against ``--max-pixels``, then the estimated peak memory against
    the budget (:func:`clipseg.memory.check_memory`); a tiled image for its largest region.
    """
    from ..memory import ModelFacts, check_memory, working_size

    config = resolve_config(config)
    height, width = (int(v) for v in shape)
    facts = facts or ModelFacts.of_arch(_arch(config)) or ModelFacts()
    what = "image"
    if wants_tiling((height, width), config, options):
        from .largeimage import pamr_halo, plan_tiles

        window = config.window
        tiles = plan_tiles(height, width, options.tile_size, window.crop, window.stride,
                           pamr_halo(config))
        height = max(t.region[2] - t.region[0] for t in tiles)
        width = max(t.region[3] - t.region[1] for t in tiles)
        what = "tile region"
    else:
        if height * width > options.max_pixels:  # the full-size logits: K x H x W floats
            return InvalidInputError(
                f"expected at most --max-pixels {options.max_pixels} pixels for an untiled "
                f"image, got {height}x{width} ({job.name}); pass --short-side 0 to process it "
                f"in tiles at full resolution, or raise --max-pixels")
        short = config.window.short_side
        wh, ww = working_size(height, width, short)
        if wh * ww > options.max_pixels:
            fit = int(math.sqrt(options.max_pixels / (max(wh, ww) / min(wh, ww))))
            return InvalidConfigError(
                f"--short-side: expected a working image of at most --max-pixels "
                f"{options.max_pixels} pixels, got {wh}x{ww} = {wh * ww} pixels for "
                f"{job.name} ({height}x{width} resized to short side {short}); lower "
                f"--short-side (at most {fit} fits), or raise --max-pixels")
    if not check_budget:
        return None
    image_bytes = 12 if job.source.suffix.lower() in (".tif", ".tiff") else 3
    try:
        check_memory(config, height, width, _num_maps(config, classes), facts=facts,
                     image_bytes=image_bytes, what=f"{what} ({job.name})")
    except InvalidConfigError as exc:
        return exc
    return None


def _arch(config: SegmentConfig) -> str:
    from ..models.registry import entry_for

    return entry_for(config.model).arch


def _check_channels(job: Job, options: RunOptions) -> None:
    """``--channels`` (indices, names, ``dyes``) against the run's first image (one open,
    lazy for TIFF). An unreadable first image is left to its own job to report."""
    from ..channels import ChannelChoice
    from .largeimage import open_image

    try:
        source = open_image(job.source)
    except ClipSegError:
        return
    choice = options.channels
    if not isinstance(choice, ChannelChoice):
        choice = ChannelChoice(slots=tuple(choice or ()))
    shape = tuple(source.data.shape)
    names = source.spatial.channel_names if source.spatial is not None else ()
    source.close()
    try:
        choice.resolve(names, shape[2] if len(shape) == 3 else 1,
                       f"the first image, {job.name},")
    except InvalidInputError as exc:
        raise InvalidConfigError(str(exc)) from None


def preflight(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
              options: RunOptions, *, facts: Any = None, check_budget: bool = True) -> None:
    """Stop a run whose options cannot work, before any image is segmented (exit 2).

    ``--channels`` is checked against the first image; the working size and the memory
    estimate against every image until one passes: when none would fit, the options are at
    fault and the run stops with the first image's reason; when some fit, the others fail one
    by one (exit 1) and the rest are segmented.
    """
    if not jobs:
        return
    if options.channels is not None:
        _check_channels(jobs[0], options)
    first: ClipSegError | None = None
    refused = 0
    for job in jobs:
        shape = image_size(job.source)
        if shape is None:
            continue  # unreadable: its own job reports it
        refusal = job_refusal(job, shape, config, classes, options, facts=facts,
                              check_budget=check_budget)
        if refusal is None:
            return
        first = first or refusal
        refused += 1
    if first is not None:
        more = f" (and the same for the other {refused - 1} images)" if refused > 1 else ""
        raise InvalidConfigError(f"{first}{more}")


def _job_sidecar(job: Job) -> dict[str, Any] | None:
    """``job``'s existing sidecar, or None when there is none or it cannot be read."""
    side = io.find_sidecar(job.base)
    if side is None:
        return None
    try:
        return io.read_sidecar(side)
    except InvalidInputError:
        return None


def _kept_for_a_person(job: Job) -> bool:
    meta = _job_sidecar(job)
    return (meta is not None and touched_by_a_person(meta)
            and io.label_image_path(job.base, meta).is_file())


def _info(job: Job, source: Any) -> dict[str, Any]:
    return {"path": str(job.source), "name": job.name, "dtype": str(source.dtype)}


def write_result(job: Job, labels: np.ndarray, probs: np.ndarray | None, config: SegmentConfig,
                 classes: Sequence[ClassSpec], *, model_name: str | None,
                 image_info: dict[str, Any], tiff_tags: Sequence[tuple] | None = None,
                 extra: dict[str, Any] | None = None,
                 instances: InstanceOptions | None = None,
                 pixel_size: dict[str, Any] | None = None) -> list[Path]:
    """Write an in-memory result: scores and instances first (if any), then labels, then the
    sidecar (which records the review state "draft").

    ``tiff_tags`` (tifffile ``extratags``) go into the label TIFF (a TIFF then) and the scores
    file; ``extra`` are more sidecar keys; ``pixel_size`` (µm, the input's: the labels have
    its size) goes into the sidecar, the label TIFF (a TIFF then) and the scores file.
    """
    import tifffile

    io.prepare_overwrite(job.base)
    remove_job_leftovers(job)  # a killed run's .NAME.XXXX.part files (serial, Dask, tiled)
    extra = dict(extra or {})
    if probs is not None:
        sp = scores_path(job.base)
        data = np.asarray(probs, dtype=np.float16)
        kwargs = _scores_tiff_kwargs(data.shape[0], tiff_tags, pixel_size)
        io.atomic_write(sp, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib",
                                                         **kwargs))
        extra["scores"] = sp.name
    if instances is not None:
        extra["instances"] = write_instances(job.base, labels, classes, instances)
    extra["review"] = _draft({})["review"]
    names, synonyms = class_entries(classes)
    # The format follows the run's class count, not the labels one image happens to contain,
    # so every output of a run with more than 255 classes is a TIFF (docs/cli.md).
    target = job.base.with_name(job.base.name + ".tif") if len(names) > 255 else job.base
    return io.write_labels(target, labels, names, synonyms=synonyms, model=model_name,
                           config=config, image_info=image_info, extra=extra,
                           tiff_tags=tiff_tags, pixel_size=pixel_size)


def write_tiled(job: Job, shape: tuple[int, int], config: SegmentConfig,
                classes: Sequence[ClassSpec],
                options: RunOptions, results: Any, *,
                image_info: dict[str, Any], tiff_tags: Sequence[tuple] | None = None,
                extra: dict[str, Any] | None = None,
                nodata: float | None = None,
                pixel_size: dict[str, Any] | None = None) -> list[Path]:
    """Stream tile results into memory-mapped TIFFs, then publish them and the sidecar.

    ``results`` yields ``(Tile, TileResult)``; labels go to ``NAME.tif`` (uncompressed,
    so the plugin can map it lazily), probabilities to ``NAME.scores.tif``. ``tiff_tags``
    and ``pixel_size`` go into both files, ``extra`` into the sidecar; pixels where the input
    equals ``nodata`` (every band) get label 0.
    """
    import tifffile

    from ..formats.ome import pixel_size_entry, tiff_kwargs
    from .largeimage import stream_tiles

    height, width = shape
    k = len(classes)
    if options.instances is not None and height * width > options.max_pixels:
        raise InvalidInputError(
            f"--instances: expected at most --max-pixels {options.max_pixels} pixels to split "
            f"into objects (the labels are held whole), got {height}x{width}; run this image "
            f"without --instances or raise --max-pixels")
    io.prepare_overwrite(job.base)
    remove_job_leftovers(job)  # a killed run's .NAME.XXXX.part files (serial, Dask, tiled)
    label_path = job.base.with_name(job.base.name + ".tif")
    sp = scores_path(job.base)
    with io.atomic_path(label_path) as tmp_labels, \
            (io.atomic_path(sp) if options.scores else nullcontext()) as tmp_scores:
        labels = tifffile.memmap(tmp_labels, shape=(height, width), dtype=io.label_dtype(k),
                                 photometric="minisblack", extratags=list(tiff_tags or ()),
                                 **tiff_kwargs(pixel_size))
        scores = (tifffile.memmap(tmp_scores, shape=(k, height, width), dtype=np.float16,
                                  **_scores_tiff_kwargs(k, tiff_tags, pixel_size))
                  if tmp_scores is not None else None)
        model_name = stream_tiles(results, labels, scores)
        if nodata is not None:
            from ..formats.geo import mask_nodata
            from .largeimage import open_image

            with open_image(job.source) as source:
                mask_nodata(labels, source.data, nodata)
        for arr in (labels, scores):
            if arr is not None:
                arr.flush()
        del labels, scores
    names, synonyms = class_entries(classes)
    info = dict(image_info, tiled=True, tile_size=options.tile_size)
    extra = dict(extra or {}, **({"scores": sp.name} if options.scores else {}))
    if pixel_size is not None:
        extra["pixel_size"] = pixel_size_entry(pixel_size)
    if options.instances is not None:
        extra["instances"] = write_instances(job.base, io.read_tiff(label_path, lazy=True),
                                             classes, options.instances)
    side = io.make_sidecar(names, synonyms=synonyms, model=model_name, config=config,
                           image_info=info, shape=(height, width), file=label_path.name,
                           extra=extra or None)
    return [label_path, io.write_sidecar(job.base, _draft(side))]


# --------------------------------------------------------------------------------------------
# a whole run
# --------------------------------------------------------------------------------------------
def run_jobs(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
             options: RunOptions, *,
             dask_scheduler: str | None = None, dask_local: int | None = None) -> Summary:
    """Run every job (serially, or over Dask), write the COCO JSON, return the summary."""
    start = time.perf_counter()
    config = resolve_config(config)  # the model's defaults, once: the same in every worker
    run_hash = expected_hash(config, classes)
    todo = [j for j in jobs if not (options.resume and is_complete(
        j, run_hash, scores=options.scores, vector=vector_path(j, options),
        instances=options.instances))]
    if todo:  # every check that can fail for all images fails here, before the first (exit 2)
        from ..memory import ModelFacts

        if dask_scheduler or dask_local is not None:
            facts = ModelFacts.of_arch(_arch(config))
            if facts is not None:
                resolve_config(config, num_layers=facts.layers)
        else:  # the model is needed anyway: load it now, a load error stops the run
            segmenter = segmenter_for(config)
            _ = segmenter.resolved_config  # middle_layer / dsi_layers against the tower
            facts = ModelFacts.of_tower(segmenter.encoder.tower)
        # On a remote cluster this machine's free memory says nothing about the workers'.
        preflight(todo, config, classes, options, facts=facts,
                  check_budget=not dask_scheduler or config.model.max_memory is not None)
    if dask_scheduler or dask_local is not None:
        from .distributed import run_distributed

        outcomes = run_distributed(jobs, config, classes, options, run_hash,
                                   address=dask_scheduler, local_workers=dask_local)
    else:
        outcomes = _run_serial(jobs, config, classes, options, run_hash)
    summary = Summary(outcomes=outcomes)
    if options.coco is not None:
        try:
            remove_leftovers(options.coco)
            summary.coco = write_run_coco(jobs, outcomes, classes, options.coco)
            if options.instances is not None:
                write_run_coco_instances(jobs, outcomes, classes, options.instances,
                                         coco_instances_path(options.coco))
        except OSError as exc:  # disk full, read-only...: reported, the labels are kept
            summary.errors.append(describe_os_error(exc, "writing the COCO JSON",
                                                    options.coco))
    try:
        _write_failure_log(summary, options.output)
    except OSError as exc:
        summary.errors.append(describe_os_error(exc, "writing the failure log",
                                                Path(options.output) / FAILURE_LOG))
    summary.seconds = time.perf_counter() - start
    return summary


def _run_serial(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
                options: RunOptions,
                run_hash: str) -> list[Outcome]:
    from tqdm import tqdm

    outcomes = []  # the model is loaded (run_jobs' checks) when any job is left to do
    bar = tqdm(jobs, unit="img", disable=not options.progress, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.name[-40:], refresh=False)
        outcomes.append(process_job(job, config, classes, options, run_hash))
    bar.close()
    return outcomes


def write_run_coco(jobs: Sequence[Job], outcomes: Sequence[Outcome], classes: Sequence[ClassSpec],
                   path: Path) -> Path | None:
    """COCO JSON over every image of the run with complete outputs (done or skipped)."""
    from ..formats.coco import write_coco

    ok = {o.name for o in outcomes if o.status in ("done", "skipped")}
    names, synonyms = class_entries(classes)
    entries = io.make_sidecar(names, synonyms=synonyms)["classes"]

    def images():
        for job in jobs:
            if job.name in ok:
                labels, _ = io.read_labels(job.base, lazy=True)
                yield job.name, labels

    return write_coco(path, entries, images())


def _write_failure_log(summary: Summary, output: Path) -> None:
    log = Path(output) / FAILURE_LOG
    if summary.failures or summary.errors:
        text = "\n".join([f"== {o.name}\n{o.reason}\n{o.detail}" for o in summary.failures]
                         + [f"== run\n{e}\n" for e in summary.errors])
        remove_leftovers(log)
        io.atomic_write_text(log, text)
    else:
        log.unlink(missing_ok=True)
