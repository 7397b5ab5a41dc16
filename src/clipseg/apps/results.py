"""Writing one job's outputs: labels, sidecar, scores, instances, polygons (atomically).

:func:`write_result` writes an in-memory result, :func:`write_tiled` streams the tiles of an
image processed at full resolution into memory-mapped TIFFs; both write the sidecar last,
recording the review state "draft" (:mod:`clipseg.formats.review`).

A GeoTIFF input's georeferencing (:func:`clipseg.formats.geo.read_georeference`) is copied to
the label TIFF (always a TIFF then) and the scores file, recorded in the sidecar as ``"geo"``,
and its no-data pixels become label 0. A microscopy input's physical pixel size (OME-TIFF,
ImageJ TIFF: :func:`clipseg.formats.ome.read_spatial`) goes the same way: into the label TIFF
(a TIFF then) as OME-XML and resolution tags, the scores file, and the sidecar's
``"pixel_size"``; the channels chosen with ``--channels`` are recorded as ``"channels"``.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import remove_leftovers
from ..errors import InvalidInputError
from ..formats import io
from .batch_instances import InstanceOptions, write_instances
from .jobs import Job, RunOptions, class_entries, scores_path, vector_path

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec

__all__ = ["write_result", "write_tiled", "write_vector", "geo_outputs", "spatial_outputs",
           "remove_job_leftovers", "image_info"]


def _draft(side: dict[str, Any]) -> dict[str, Any]:
    from ..formats.review import DRAFT, with_review_state

    return with_review_state(side, DRAFT)


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


def remove_job_leftovers(job: Job) -> list[Path]:
    """Delete the temp files a killed run left for ``job``'s outputs (``.NAME.tif.XXXX.part``,
    the whole label image of a tiled run); only this tool's temp names for this job's files."""
    from .outputs import job_paths

    return [p for path in job_paths(job.base) for p in remove_leftovers(path)]


def image_info(job: Job, source: Any) -> dict[str, Any]:
    """The sidecar's ``"image"`` entry of ``job``'s open input."""
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
