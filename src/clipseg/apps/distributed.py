"""Scale-out over ``dask.distributed``: images (and tiles of huge images) on many workers.

``clipseg batch DIR ... --dask-scheduler tcp://host:8786`` uses an existing cluster;
``--dask-local N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker
processes (``N = 0``: one per GPU, or one when there is none).

* Each worker thread loads the model once (:func:`clipseg.apps.batch.segmenter_for` caches the
  Segmenter per process and thread) and reuses it for every image it gets.
* With several GPUs visible to one worker process, a worker named ``i`` (LocalCluster names
  them 0..N-1) runs on ``cuda:i % count``; on a real cluster start one worker per GPU with
  ``CUDA_VISIBLE_DEVICES`` set (``--nthreads 1``) and leave ``--device auto``.
* Whole images are written by the worker that segments them, atomically, so a worker that dies
  leaves no half file that looks complete; the scheduler re-runs its unfinished tasks on
  another worker, and failed tasks are retried ``--retries`` times (Dask ``retries=``) unless
  the failure is a deterministic input error (a corrupt file).
* Tiles of a huge image are computed on workers and returned to the client, which streams them
  into the memory-mapped output, so no two processes write the same file.
* Workers need the input and output folders at the same paths (a shared file system) and the
  same ``--model-config`` files, which every task registers before loading.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ClipSegError, InvalidConfigError
from ..resolve import resolve_config
from .batch import process_job, segmenter_for, wants_tiling
from .jobs import Job, Outcome, RunOptions, image_size, is_complete, vector_path
from .results import geo_outputs, spatial_outputs, write_tiled, write_vector

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec


class RetryableFailure(RuntimeError):
    """Raised on a worker so that Dask retries an image that failed for a non-input reason."""


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
def _prepare_worker(model_configs: Sequence[str]) -> None:
    """Register the run's open_clip config files in this worker process (idempotent)."""
    if model_configs:
        from pathlib import Path

        from ..models.arch_configs import register_model_configs

        register_model_configs([Path(p) for p in model_configs])


def worker_config(config: SegmentConfig) -> SegmentConfig:
    """``config`` with the device of this worker when one process sees several GPUs."""
    import torch

    if config.model.device not in ("auto", "cuda") or torch.cuda.device_count() < 2:
        return config
    from distributed import get_worker

    name = get_worker().name
    index = name if isinstance(name, int) else int.from_bytes(str(name).encode(), "little")
    return config.replace(device=f"cuda:{index % torch.cuda.device_count()}")


def image_task(job: Job, config: SegmentConfig, classes: Sequence[ClassSpec],
               options: RunOptions,
               run_hash: str) -> Outcome:
    """Worker task: one whole image (see :func:`clipseg.apps.batch.process_job`)."""
    _prepare_worker(options.model_configs)
    outcome = process_job(job, worker_config(config), classes, options, run_hash)
    if outcome.status == "failed" and outcome.retryable:
        raise RetryableFailure(outcome.reason)
    return outcome


def tile_task(job: Job, tile: Any, config: SegmentConfig, classes: Sequence[ClassSpec],
              options: RunOptions,
              contrast_limits: Any) -> tuple[Any, Any]:
    """Worker task: one tile of a huge image; returns ``(tile, TileResult)`` of its core."""
    from .largeimage import segment_tile

    _prepare_worker(options.model_configs)
    source = _cached_source(job, options, contrast_limits)
    result = segment_tile(segmenter_for(worker_config(config)), source, tile, classes,
                          scores=options.scores)
    return tile, result


_SOURCES: dict[int, tuple[Any, Any]] = {}


def _cached_source(job: Job, options: RunOptions, contrast_limits: Any) -> Any:
    """The open image of ``job``, kept per thread for its next tiles (a PNG decodes once)."""
    import threading

    from .largeimage import open_image

    thread = threading.get_ident()
    stat = job.source.stat()
    key = (job.source, stat.st_mtime_ns, stat.st_size, options.channels, contrast_limits)
    held = _SOURCES.get(thread)
    if held is not None and held[0] == key:
        return held[1]
    if held is not None:
        held[1].close()
    source = open_image(job.source, channels=options.channels,
                        contrast_limits=contrast_limits)
    _SOURCES[thread] = (key, source)
    return source


# --------------------------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------------------------
def _cluster(address: str | None, local_workers: int | None) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if address:
        return Client(address), None
    import torch

    gpus = torch.cuda.device_count()
    workers = local_workers or max(1, gpus)
    threads = max(1, (os.cpu_count() or 1) // workers) if gpus == 0 else 1
    # Ctrl-C reaches every process of the terminal's group: the workers, started while SIGINT is
    # ignored, inherit that and leave the interrupt to this process, which shuts them down
    # (otherwise each prints a KeyboardInterrupt traceback of its event loop).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        with warnings.catch_warnings():  # "Port 8787 is already in use": not the user's concern
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR,
                                   env={"OMP_NUM_THREADS": str(threads)})
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return Client(cluster), cluster


def _shutdown(client: Any, cluster: Any, *, interrupted: bool) -> None:
    """Close the client and a local cluster; after Ctrl-C, without Dask's shutdown chatter
    (tasks being cancelled, workers killed after a timeout: expected when interrupting)."""
    if interrupted:
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    except Exception:  # an error while stopping must not hide the interrupt
        if not interrupted:
            raise


def run_distributed(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
                    options: RunOptions,
                    run_hash: str, *, address: str | None = None,
                    local_workers: int | None = None) -> list[Outcome]:
    """Run ``jobs`` on a Dask cluster; outcomes in job order (same outputs as serial)."""
    from distributed import as_completed
    from tqdm import tqdm

    if not address and local_workers is None:
        raise InvalidConfigError("run_distributed: expected a scheduler address or a number "
                                 "of local workers, got neither")
    outcomes: dict[str, Outcome] = {}
    whole, tiled = [], []
    for job in jobs:
        if options.resume and is_complete(job, run_hash, scores=options.scores,
                                          vector=vector_path(job, options),
                                          instances=options.instances):
            outcomes[job.name] = Outcome(job.name, "skipped")
            continue
        size = image_size(job.source)
        (tiled if size is not None and wants_tiling(size, config, options) else whole).append(job)
    if not whole and not tiled:
        return [outcomes[job.name] for job in jobs]
    client, cluster = _cluster(address, local_workers)
    bar = tqdm(total=len(jobs), initial=len(outcomes), unit="img",
               disable=not options.progress, dynamic_ncols=True)
    interrupted = False
    try:
        futures = {}
        for job in whole:
            fut = client.submit(image_task, job, config, classes, options, run_hash,
                                retries=options.retries, pure=False,
                                key=f"clipseg-image-{job.name}-{uuid.uuid4().hex[:12]}")
            futures[fut] = job
        for job in tiled:
            outcomes[job.name] = _run_tiled(client, job, config, classes, options)
            bar.update(1)
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                outcomes[job.name] = fut.result()
            except Exception as exc:  # retries exhausted or worker lost: reported per image
                outcomes[job.name] = Outcome(job.name, "failed",
                                             f"{type(exc).__name__}: {exc}")
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        bar.close()
        _shutdown(client, cluster, interrupted=interrupted)
    return [outcomes[job.name] for job in jobs]


def _run_tiled(client: Any, job: Job, config: SegmentConfig, classes: Sequence[ClassSpec],
               options: RunOptions) -> Outcome:
    """Client side of one huge image: tile tasks out, cores streamed into the output file."""
    import time
    import traceback

    from distributed import as_completed

    from .largeimage import open_image, pamr_halo, plan_tiles

    start = time.perf_counter()
    try:
        with open_image(job.source, channels=options.channels,
                        contrast_limits=options.contrast_limits) as source:
            shape, limits, info = source.shape, source.contrast_limits(), {
                "path": str(job.source), "name": job.name, "dtype": str(source.dtype)}
            pixel_size, more = spatial_outputs(source)
        window = resolve_config(config).window
        crop, stride = window.crop, window.stride
        tiles = plan_tiles(*shape, options.tile_size, crop, stride, pamr_halo(config))
        futures = client.map(tile_task, [job] * len(tiles), tiles, config=config,
                             classes=classes, options=options, contrast_limits=limits,
                             retries=options.retries, pure=False)
        results = (fut.result() for fut in as_completed(futures))
        geo, tags, extra = geo_outputs(job)
        write_tiled(job, shape, config, classes, options, results, image_info=info,
                    tiff_tags=tags, extra={**extra, **more},
                    nodata=geo.nodata if geo else None, pixel_size=pixel_size)
        write_vector(job, options, classes, geo)
    except Exception as exc:  # reported in the summary; the run goes on
        return Outcome(job.name, "failed", f"{type(exc).__name__}: {exc}",
                       time.perf_counter() - start, tiled=True, detail=traceback.format_exc(),
                       retryable=not isinstance(exc, ClipSegError))
    return Outcome(job.name, "done", seconds=time.perf_counter() - start, tiled=True)
