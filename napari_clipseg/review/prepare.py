"""Preparing review images off the GUI thread: read a draft, or segment an image without one.

:class:`PrepareQueue` runs one job at a time in a napari worker thread (the model
:class:`~napari_clipseg.job.Session` is not thread-safe) and keeps what it prepared until the
widget shows it. A job is ``("load", i)`` (read image ``i`` and its draft, and segment it when it
has none: the prefetch of the next image) or ``("segment", i)`` (segment the image shown again,
with the class list typed). The image the person waits for goes to the front of the queue.

:func:`prepare` and :func:`segment` are the functions the threads run; they have no Qt.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipseg.errors import ClipSegError, InvalidInputError

from .series import Loaded, ReviewSeries, ShapeMismatch

__all__ = ["Prepared", "PrepareQueue", "prepare", "segment"]

Job = tuple[str, int]


@dataclass
class Prepared:
    """What a worker prepared for one image: the loaded draft, or a segmentation of it."""

    loaded: Loaded | None = None
    segmented: Any = None      # JobResult / JobFailure of a segmentation, or None
    error: str = ""
    mismatch: bool = False


class PrepareQueue:
    """One worker job at a time, the image waited for first.

    Parameters
    ----------
    start : callable
        ``start(job) -> (token, func, args)`` builds a job's thread function and arguments from
        the widget's state now, or returns None when nothing may start (no folder, closed).
        ``token`` (the series) is handed back with the result, so a result for a folder that
        was closed meanwhile can be told apart.
    finished : callable
        ``finished(token, job, out)`` on the GUI thread; ``out`` is what ``func`` returned, or a
        :class:`Prepared` with the error when it raised.
    """

    def __init__(self, start: Callable[[Job], tuple[Any, Callable[..., Any], tuple] | None],
                 finished: Callable[[Any, Job, Any], None]) -> None:
        self._start, self._finished = start, finished
        #: image index -> what was prepared for it (taken out when shown)
        self.cache: dict[int, Prepared] = {}
        self.queue: list[Job] = []
        self.busy: Job | None = None
        self.worker: Any = None
        #: the image the widget waits to show, or None
        self.want: int | None = None

    def request(self, index: int, kind: str = "load") -> None:
        """Queue a job (a load already prepared or running is not queued again)."""
        job = (kind, index)
        if kind == "load" and (index in self.cache or self.busy == job):
            return
        if job in self.queue:
            self.queue.remove(job)
        if kind == "segment" or index == self.want:
            self.queue.insert(0, job)
        else:
            self.queue.append(job)
        self.pump()

    def pump(self) -> None:
        """Start the next job when none runs."""
        from napari.qt.threading import create_worker

        if self.busy is not None or not self.queue:
            return
        if self.want is not None and ("load", self.want) in self.queue:
            self.queue.remove(("load", self.want))
            self.queue.insert(0, ("load", self.want))
        started = self._start(self.queue[0])
        if started is None:
            return
        job = self.queue.pop(0)
        token, func, args = started
        self.busy = job
        worker = create_worker(func, *args, _start_thread=False,
                               _connect={"returned": lambda out: self._done(token, job, out),
                                         "errored": lambda exc: self._done(token, job, Prepared(
                                             error=f"{type(exc).__name__}: {exc}"))})
        self.worker = worker
        worker.start()

    def _done(self, token: Any, job: Job, out: Any) -> None:
        self.busy = None
        self.worker = None
        self._finished(token, job, out)
        self.pump()

    def clear(self) -> None:
        """Forget what was prepared and queued (a running job finishes, and is told apart by
        its token)."""
        self.cache.clear()
        self.queue.clear()
        self.want = None

    @property
    def idle(self) -> bool:
        """No job runs or waits and no image waits to be shown."""
        return self.busy is None and not self.queue and self.want is None


# -- what the worker threads run ----------------------------------------------------------------
def prepare(series: ReviewSeries, index: int, session: Any, classes: str,
            config: Any) -> Prepared:
    """Read image ``index`` and its draft; segment it when it has none (worker thread)."""
    try:
        loaded = series.load(index)
    except ShapeMismatch as exc:
        return Prepared(error=str(exc), mismatch=True)
    except (ClipSegError, OSError, ValueError) as exc:
        return Prepared(error=f"{series[index].name}: could not be opened: {exc}")
    segmented = None
    if loaded.labels is None and classes.strip():
        segmented = segment(loaded.image, session, classes, config, series[index].name)
    return Prepared(loaded=loaded, segmented=segmented)


def default_config() -> Any:
    """The bundled demo model's defaults (it works offline)."""
    from clipseg.config import SegmentConfig
    from clipseg.models.bundled import BUNDLED_ARCH

    return SegmentConfig.from_flat({"model": BUNDLED_ARCH})


def segment(image: np.ndarray, session: Any, classes: str, config: Any, name: str) -> Any:
    """Segment ``image`` with ``classes`` (worker thread): a JobResult or a JobFailure."""
    from ..image_source import ImageSource
    from ..job import JobFailure, JobRequest, drive, guarded_run

    if config is None:
        config = default_config()
    source = ImageSource(name=name, data=image, rgb=True, channel_axis=None, channels=None,
                         contrast_limits=None, plane_axes=(), current=(), scale=(1.0, 1.0),
                         translate=(0.0, 0.0))
    try:
        request = JobRequest(source=source, planes=[()], classes=classes, config=config)
        return drive(guarded_run(session, request))
    except InvalidInputError as exc:
        return JobFailure(str(exc))
