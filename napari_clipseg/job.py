"""The work of one Run, with no Qt and no viewer: safe to run in a worker thread.

:class:`Session` owns the loaded models and the engine's :class:`clipseg.pipeline.Segmenter`
(whose cache holds the window embeddings of the last plane). :meth:`Session.run` is a generator
yielding :class:`JobProgress` and returning a :class:`JobResult`; the widget hands it to a
napari ``GeneratorWorker`` (whose ``quit()`` stops it at the next yield), while tests and
scripts drain it synchronously with :func:`drive`.

- The session keeps one Segmenter while the model, readout and windows stay the same; the
  engine's cache (keyed by the pixels) then skips the ViT pass when only the class list,
  prompts, thresholds or PAMR changed.
- It also keeps, for the last plane, each pixel's best class and its probability, so a change
  of thresholds alone is a comparison per pixel (no stitching, no text).
- A model loads in a thread of its own while the job polls it, yielding every
  :data:`POLL_SECONDS`: a cancelled job ends at once and the load finishes in the background
  (the next run picks it up).
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipseg.config import SegmentConfig
from clipseg.errors import ClipSegError, InvalidInputError
from clipseg.generators import drain, relay

from .image_source import ImageSource, PlaneIndex
from .messages import for_gui

#: How often a job waiting for a model load yields (so Cancel takes effect).
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class JobRequest:
    """Everything a run needs, captured on the main thread.

    Attributes
    ----------
    source : ImageSource
        Where the pixels come from.
    planes : list of tuple of int
        Plane indices to segment (``[()]`` for a 2-D image).
    classes : str
        The class list as typed (one per line, synonyms separated by ";").
    config : SegmentConfig
        All engine options.
    scores : bool
        Keep the per-class probabilities ``(K, H, W)`` of every plane.
    live : bool
        A live update: only from cached embeddings; never a ViT pass, never a model load.
    """

    source: ImageSource
    planes: list[PlaneIndex]
    classes: str
    config: SegmentConfig
    scores: bool = False
    live: bool = False


@dataclass(frozen=True)
class JobProgress:
    """One progress step: plane ``plane + 1`` of ``n_planes``, engine ``stage`` at done/total."""

    plane: int
    n_planes: int
    stage: str
    done: int
    total: int

    @property
    def text(self) -> str:
        """Short human-readable description, e.g. ``"plane 2/5 - windows 3/8"``."""
        head = f"plane {self.plane + 1}/{self.n_planes} - " if self.n_planes > 1 else ""
        if self.stage == "loading model":
            return f"{head}loading the model…"
        return f"{head}{self.stage} {self.done}/{self.total}"


@dataclass
class JobResult:
    """What a run produced, to be applied to the viewer on the main thread.

    Attributes
    ----------
    request : JobRequest
    labels : dict of plane index -> (H, W) uint8/uint16 ndarray
    probs : dict of plane index -> (K, H, W) float32 ndarray (only when ``request.scores``)
    class_names : list of str
        ``K`` names; label ``k + 1`` is ``class_names[k]``.
    synonyms : list of list of str
    model_name : str
    relabelled : bool
        True when no ViT pass ran (cached embeddings, or thresholds only).
    """

    request: JobRequest
    labels: dict[PlaneIndex, np.ndarray] = field(default_factory=dict)
    probs: dict[PlaneIndex, np.ndarray] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    synonyms: list[list[str]] = field(default_factory=list)
    model_name: str = ""
    relabelled: bool = False


@dataclass(frozen=True)
class JobFailure:
    """An expected failure (bad input, missing weights, out of memory) with a message for users."""

    message: str


def _model_key(config: SegmentConfig) -> tuple:
    m = config.model
    return (m.model, m.pretrained, m.checkpoint, m.device, m.precision, m.cache_dir)


class _Load:
    """A model load running in a daemon thread (so a hung download never blocks anything)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        def target() -> None:
            try:
                self.result = load()
            except BaseException as exc:
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=target, daemon=True, name="clipseg-model-load").start()


@dataclass
class _Scores:
    """Best class and its probability per pixel of the last plane, for threshold changes."""

    image: np.ndarray           # (H, W, 3) float32 the scores belong to
    key: tuple                  # classes, prompts, logit scale, refine, segmenter
    top: np.ndarray             # (H, W) float32
    arg: np.ndarray             # (H, W) int64, class index 0..K-1
    model_name: str


class Session:
    """Models and engine state kept between runs of one widget.

    Parameters
    ----------
    loader : callable, optional
        ``ModelConfig -> LoadedModel``; default :func:`clipseg.models.load_model`, after the
        quick offline check of :func:`napari_clipseg.model_choice.check_weights`.

    Notes
    -----
    Not thread-safe: the widget runs at most one job at a time.
    """

    def __init__(self, loader: Callable[[Any], Any] | None = None) -> None:
        self._loader = loader
        self._models: dict[tuple, Any] = {}
        self._loads: dict[tuple, _Load] = {}
        self._custom: dict[str, Any] = {}
        self._segmenter: Any = None
        self._segmenter_model: tuple | None = None
        self._scores: _Scores | None = None

    # -- models -----------------------------------------------------------------------------
    def add_model(self, name: str, model: Any) -> None:
        """Make an already-built model selectable by ``name`` (a LoadedModel or open_clip CLIP)."""
        from clipseg.models import LoadedModel, wrap_model

        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"model name: expected a non-empty string, got {name!r}")
        self._custom[name] = model if isinstance(model, LoadedModel) else wrap_model(model,
                                                                                     name=name)
        self._models = {k: v for k, v in self._models.items() if k[0] != name}
        if self._segmenter_model is not None and self._segmenter_model[0] == name:
            self._segmenter = None  # it holds the previous model under this name
            self._scores = None

    def loaded(self, name: str) -> Any:
        """The model added as ``name`` with :meth:`add_model`."""
        if name not in self._custom:
            raise InvalidInputError(f"model {name!r}: expected one of the added models "
                                    f"{self.custom_models}")
        return self._custom[name]

    @property
    def custom_models(self) -> list[str]:
        """Names registered with :meth:`add_model`."""
        return list(self._custom)

    def _load(self, config: Any) -> Any:
        if self._loader is not None:
            return self._loader(config)
        from clipseg.models import load_model

        from .model_choice import check_weights

        check_weights(config)  # fails within seconds when the weights cannot be had
        return load_model(config)

    def model_for(self, config: SegmentConfig) -> Generator[JobProgress, None, Any]:
        """The LoadedModel for ``config.model``, loaded in a thread while this polls it.

        Yields ``JobProgress("loading model")`` every :data:`POLL_SECONDS` while loading.
        The last model loaded is kept for reuse (weights can take gigabytes).
        """
        name = config.model.model
        if name in self._custom and config.model.checkpoint is None:
            return self._custom_on_device(name, config.model.device)
        key = _model_key(config)
        if key in self._models:
            return self._models[key]
        load = self._loads.get(key)
        if load is None:
            load = self._loads[key] = _Load(lambda: self._load(config.model))
        while not load.done.wait(POLL_SECONDS):
            yield JobProgress(0, 1, "loading model", 0, 1)
        del self._loads[key]
        if load.error is not None:
            raise load.error
        self._models = {key: load.result}
        self._segmenter = None
        self._scores = None
        return load.result

    def _custom_on_device(self, name: str, device: str) -> Any:
        """The added model ``name``, moved (in place) to ``device`` unless that is "auto"."""
        from clipseg.models import resolve_device

        loaded = self._custom[name]
        if device == "auto":
            return loaded
        target = resolve_device(device)
        if target != loaded.device:
            loaded = dataclasses.replace(loaded, model=loaded.model.to(target), device=target)
            self._custom[name] = loaded
            self._segmenter = None  # it holds the model on its previous device
            self._scores = None
        return loaded

    def forget_embeddings(self) -> None:
        """Drop the engine's cached embeddings and scores (after a failed run)."""
        if self._segmenter is not None:
            self._segmenter.clear_cache()
        self._scores = None

    # -- running ----------------------------------------------------------------------------
    def _reusable(self, config: SegmentConfig) -> bool:
        """Whether the current Segmenter serves ``config`` (labels and refine aside)."""
        seg = self._segmenter
        return seg is not None and dataclasses.replace(
            config, labels=seg.config.labels, refine=seg.config.refine) == seg.config

    def can_relabel(self, request: JobRequest) -> bool:
        """True when running ``request`` would reuse cached embeddings (no ViT pass).

        That is: one plane, the same model, readout and windows as the last run, and that
        plane's pixels unchanged (the engine compares them by digest).
        """
        return (len(request.planes) == 1 and self._reusable(request.config)
                and self._segmenter.is_cached(request.source.read_plane(request.planes[0])))

    def _segmenter_for(self, config: SegmentConfig) -> Generator[JobProgress, None, Any]:
        """The Segmenter for ``config``, kept while only labels/refine options change."""
        from clipseg.pipeline import Segmenter

        if not self._reusable(config):
            model = yield from self.model_for(config)
            self._segmenter = Segmenter(config, model=model)
            self._segmenter_model = _model_key(config)
            self._scores = None
        return self._segmenter

    def _score_key(self, specs: list[Any], config: SegmentConfig) -> tuple:
        labels = config.labels
        return (tuple((s.name, tuple(s.synonyms)) for s in specs), labels.prompts,
                labels.logit_scale, config.refine, id(self._segmenter))

    def _from_scores(self, image: np.ndarray, specs: list[Any], config: SegmentConfig
                     ) -> np.ndarray | None:
        """Labels from the kept scores when only thresholds changed, else None."""
        from clipseg.labels import class_threshold_vector, label_dtype

        kept = self._scores
        if kept is None or kept.key != self._score_key(specs, config) \
                or kept.image.shape != image.shape or not np.array_equal(kept.image, image):
            return None
        thresholds = class_threshold_vector([s.name for s in specs], config.labels)
        keep = kept.top >= thresholds[kept.arg]
        labels = np.where(keep, kept.arg + 1, 0).astype(label_dtype(len(specs)))
        return labels

    def _keep_scores(self, image: np.ndarray, specs: list[Any], config: SegmentConfig,
                     out: Any) -> None:
        probs = torch.from_numpy(np.asarray(out.probs))
        top, arg = probs.max(dim=0)  # the engine's own reduction (labels.labels_from_logits)
        self._scores = _Scores(image=image, key=self._score_key(specs, config),
                               top=top.numpy(), arg=arg.numpy(), model_name=out.model_name)

    def run(self, request: JobRequest) -> Generator[JobProgress, None, JobResult]:
        """Segment every plane of ``request``; yields progress, returns the result.

        Stopping the iteration early (a cancelled worker) leaves nothing half-applied: results
        only reach the viewer through the returned :class:`JobResult`, and the engine writes its
        cache only when a plane's window pass is complete.

        Raises
        ------
        ClipSegError
            For a live request (``request.live``) whose plane is not cached.
        """
        from clipseg.text import parse_classes

        specs = parse_classes(request.classes)
        result = JobResult(request=request, class_names=[s.name for s in specs],
                           synonyms=[list(s.synonyms) for s in specs])
        n = len(request.planes)
        if n == 0:
            raise InvalidInputError("planes: expected at least one plane to segment, got none")
        config = request.config
        if request.live and not (n == 1 and self._reusable(config)):
            raise NotCached("live update: the model or window settings changed; press Run")
        yield JobProgress(0, n, "model", 0, 1)
        seg = yield from self._segmenter_for(config)
        yield JobProgress(0, n, "model", 1, 1)
        reused = []
        for p, plane in enumerate(request.planes):
            image = request.source.read_plane(plane)
            fast = None if request.scores else self._from_scores(image, specs, config)
            if fast is not None:
                result.labels[plane] = fast
                result.model_name = self._scores.model_name
                reused.append(True)
                yield JobProgress(p, n, "labels", 1, 1)
                continue
            if request.live and not seg.is_cached(image):
                raise NotCached("live update: this plane has no cached embeddings; press Run")
            out = yield from relay(
                seg.run(image, specs, labels=config.labels, refine=config.refine),
                lambda step, p=p: JobProgress(p, n, step.stage, step.done, step.total))
            self._store(result, plane, out, request.scores)
            self._keep_scores(image, specs, config, out)
            reused.append(out.reused_embeddings)
        result.relabelled = all(reused)
        return result

    @staticmethod
    def _store(result: JobResult, plane: PlaneIndex, out: Any, scores: bool) -> None:
        result.labels[plane] = np.asarray(out.labels)
        result.model_name = out.model_name
        if list(out.class_names) != result.class_names:
            raise InvalidInputError(f"engine result: expected classes {result.class_names}, "
                                    f"got {list(out.class_names)}")
        if scores:
            if out.probs is None:
                raise InvalidInputError("scores: the engine returned no probabilities")
            result.probs[plane] = np.asarray(out.probs, dtype=np.float32)


class NotCached(ClipSegError):
    """A live update found nothing cached to re-label from (the widget then waits for Run)."""


def guarded_run(session: Session, request: JobRequest
                ) -> Generator[JobProgress, None, JobResult | JobFailure]:
    """:meth:`Session.run`, with the engine's expected errors turned into a :class:`JobFailure`.

    Errors of the engine (:class:`clipseg.errors.ClipSegError`) and running out of memory are
    problems the user can fix, so they come back as a message in the widget's words
    (:func:`napari_clipseg.messages.for_gui`) instead of a traceback. Anything else is a bug and
    propagates (napari shows it with its traceback).
    """
    try:
        return (yield from session.run(request))
    except NotCached as exc:
        return JobFailure(str(exc))
    except ClipSegError as exc:
        session.forget_embeddings()
        return JobFailure(for_gui(exc, request.config.model.model))
    except (MemoryError, torch.OutOfMemoryError) as exc:
        session.forget_embeddings()
        device = request.config.model.device
        return JobFailure(f"out of memory on device {device!r} ({exc.__class__.__name__}); "
                          "lower 'short side' or 'windows per batch', or run on another device")


def drive(gen: Generator[Any, None, Any],
          on_progress: Callable[[Any], None] | None = None) -> Any:
    """Drain a progress generator synchronously and return its value (tests, scripts)."""
    return drain(gen, on_progress)
