"""One image of a run, and the checks that stop a run before any work.

:func:`process_job` does all of one job (read, segment, write atomically through
:mod:`.results`) and never raises for a bad image: it returns a failed
:class:`~clipseg.apps.jobs.Outcome` with the reason, and the run goes on. An image larger
than ``--tile-size`` at full resolution (``--short-side 0``) is processed in tiles
(:mod:`.largeimage`). :func:`preflight` checks ``--channels`` against the first image and the
working size and the memory estimate against the images, so that options which cannot work
stop the run (exit 2) before the first image. :func:`clipseg.apps.run.run_jobs` runs the jobs.
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClipSegError, InvalidConfigError, InvalidInputError
from ..resolve import resolve_config
from .jobs import Job, Outcome, RunOptions, image_size, is_complete, kept_for_a_person, vector_path
from .outputs import describe_os_error
from .results import (
    geo_outputs,
    image_info,
    spatial_outputs,
    write_result,
    write_tiled,
    write_vector,
)

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec

__all__ = ["segmenter_for", "wants_tiling", "process_job", "job_refusal", "preflight", "arch_of"]


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


def wants_tiling(shape: tuple[int, int], config: SegmentConfig, options: RunOptions) -> bool:
    """Tiled at native resolution: ``short_side`` 0 (resolved) and a side above ``tile_size``."""
    return (resolve_config(config).window.short_side == 0 and options.tile_size > 0
            and max(shape) > options.tile_size)


def process_job(job: Job, config: SegmentConfig, classes: Sequence[ClassSpec], options: RunOptions,
                run_hash: str) -> Outcome:
    """Segment one image and write its outputs; a failure becomes a failed :class:`Outcome`."""
    start = time.perf_counter()
    if kept_for_a_person(job):
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
                        image_info=image_info(job, source), tiff_tags=tags, extra=extra,
                        nodata=nodata, pixel_size=pixel_size)
            write_vector(job, options, classes, geo)
            return True
        refusal = job_refusal(job, source.shape, config, classes, options)
        if refusal is not None:  # before the pixels are decoded
            raise refusal
        image = source.read()
        info = image_info(job, source)
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
    facts = facts or ModelFacts.of_arch(arch_of(config)) or ModelFacts()
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


def arch_of(config: SegmentConfig) -> str:
    """The open_clip architecture of ``config``'s model (for its memory facts)."""
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
