"""Whole-image segmentation: the stateful :class:`Segmenter` facade.

Data flow: image -> resize (short side) -> sliding windows -> dense embeddings per window
(class-independent, cached for the last image) -> cosine logits against the class text
embeddings -> window logits upsampled to their boxes and averaged -> upsampled to the original
size -> optional PAMR -> labels + probabilities.

Every long step is a generator that yields :class:`Progress` and returns its result, so a GUI
worker or the CLI can show progress and cancel between window batches by not resuming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import LabelConfig, RefineConfig, SegmentConfig
from .errors import ClipSegError, InvalidConfigError, InvalidInputError, describe
from .features import DenseEncoder
from .generators import drain, relay
from .image import validate_rgb
from .labels import class_threshold_vector, labels_from_logits
from .memory import MemoryEstimate, ModelFacts, check_memory, format_bytes
from .models.loading import LoadedModel, load_model, resolve_precision, wrap_model
from .models.towers import tower_for
from .refine import pamr
from .resolve import resolve_config
from .results import Progress, SegmentationResult, WindowEmbeddings
from .text import ClassSpec, TextEncoder, class_logits, parse_classes, prompt_templates
from .text_cache import open_text_cache
from .tiling import Box, Stitcher, upsample_logits
from .windows import plan_windows, resized_guide, window_pixels

__all__ = ["Progress", "SegmentationResult", "WindowEmbeddings", "Segmenter", "segment"]

Classes = str | Sequence[str | ClassSpec]

#: Most floats of upsampled window logits held at once (windows are upsampled in groups).
UPSAMPLE_FLOATS = 1 << 24


@dataclass
class _Cache:
    key: tuple
    embeddings: WindowEmbeddings
    image: np.ndarray          # the validated input image (a private copy), for PAMR
    classes: list[ClassSpec] | None = None


def _image01(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 / float in [0, 1] -> float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return image.astype(np.float32, copy=False)


def _tower_depth(model: nn.Module) -> int:
    """Number of blocks of the model's vision tower (raises if the tower cannot be read)."""
    return tower_for(model).num_layers


def _image_digest(image: np.ndarray) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    return f"{image.shape}:{image.dtype}:{digest.hexdigest()}"


class Segmenter:
    """Open-vocabulary segmentation with one model, caching what the class list does not change.

    Parameters
    ----------
    config : SegmentConfig or None
        All options (default ``SegmentConfig()``). ``None`` in ``middle_layer``, ``crop``,
        ``stride``, ``logit_scale`` takes the model's registry value.
    model : LoadedModel, open_clip CLIP module, or None
        None: load ``config.model`` on first use (:func:`clipseg.models.load_model`). A bare
        module is wrapped with :func:`clipseg.models.wrap_model` under the name
        ``config.model.model`` (so its registry entry, or a synthesised one, gives defaults);
        it is moved to ``config.model.device`` unless that is ``"auto"``.
    templates : sequence of ``"{}"`` strings or callables, or None
        Custom prompt templates of the class names, overriding the named prompt set of
        ``config.labels.prompts`` (default: CLIP's 80 ImageNet templates).
    """

    def __init__(self, config: SegmentConfig | None = None, *,
                 model: LoadedModel | nn.Module | None = None,
                 templates: Sequence[str | Callable[[str], str]] | None = None) -> None:
        config = SegmentConfig() if config is None else config
        if not isinstance(config, SegmentConfig):
            raise InvalidConfigError(f"config: expected a SegmentConfig, got {describe(config)}")
        if model is not None and not isinstance(model, (LoadedModel, nn.Module)):
            raise InvalidInputError(f"model: expected a LoadedModel, an open_clip CLIP module or "
                                    f"None, got {describe(model)}")
        self._config = config
        self._model_arg = model
        self._templates = tuple(templates) if templates is not None else None
        self._loaded: LoadedModel | None = None
        self._text: dict[str, TextEncoder] = {}  # one per prompt set, each with its cache
        self._encoder: DenseEncoder | None = None
        self._cache: _Cache | None = None
        self._resolved: SegmentConfig | None = None

    # -- model and resolved options ----------------------------------------------------------
    @property
    def config(self) -> SegmentConfig:
        """The configuration given at construction (read-only; make a new Segmenter to change
        the model, readout or windows, or pass new labels/refine options to :meth:`relabel`)."""
        return self._config

    @property
    def loaded(self) -> LoadedModel:
        """The model (loaded on first access)."""
        if self._loaded is None:
            arg, mcfg = self._model_arg, self.config.model
            if arg is None:
                self._loaded = load_model(mcfg)
            elif isinstance(arg, LoadedModel):
                self._loaded = arg   # its compute_dtype stands unless a precision is asked for
            else:
                device = None if mcfg.device == "auto" else mcfg.device
                self._loaded = wrap_model(arg, name=mcfg.model, device=device)
            if not (isinstance(arg, LoadedModel) and mcfg.precision == "auto"):
                dtype = resolve_precision(mcfg.precision, self._loaded.device)
                if dtype != self._loaded.compute_dtype:
                    self._loaded = dataclasses.replace(self._loaded, compute_dtype=dtype)
        return self._loaded

    @property
    def resolved_config(self) -> SegmentConfig:
        """``config`` with the model's registry defaults filled in
        (:func:`clipseg.resolve.resolve_config`, checked against the tower's depth)."""
        if self._resolved is None:
            loaded = self.loaded
            self._resolved = resolve_config(self.config, loaded.entry,
                                            num_layers=_tower_depth(loaded.model))
        return self._resolved

    def _resolve_labels(self, labels: LabelConfig) -> LabelConfig:
        if labels.logit_scale is not None:
            return labels
        return dataclasses.replace(labels, logit_scale=self.resolved_config.labels.logit_scale)

    @property
    def encoder(self) -> DenseEncoder:
        """The dense encoder for the configured readout (built on first use)."""
        if self._encoder is None:
            readout = self.resolved_config.readout
            self._encoder = DenseEncoder(self.loaded.model, readout, readout.middle_layer)
        return self._encoder

    @property
    def text_encoder(self) -> TextEncoder:
        """Class-name encoder of the configured prompt set, with its per-synonym cache."""
        return self.text_encoder_for(self.config.labels.prompts)

    def text_encoder_for(self, prompts: str) -> TextEncoder:
        """Class-name encoder of the prompt set ``prompts`` (or of the custom templates), with
        the disk cache that ``config.model.text_cache`` names."""
        key = "custom" if self._templates is not None else prompts
        if key not in self._text:
            templates = self._templates if self._templates is not None \
                else prompt_templates(prompts)
            self._text[key] = TextEncoder(self.loaded, templates=templates, disk_cache=
                                          open_text_cache(self.config.model.text_cache))
        return self._text[key]

    @property
    def has_cache(self) -> bool:
        """Whether window embeddings of a finished run are cached (so :meth:`relabel` works)."""
        return self._cache is not None

    def clear_cache(self) -> None:
        """Forget the cached window embeddings (text embeddings stay)."""
        self._cache = None

    def _key(self, image: np.ndarray, cfg: SegmentConfig) -> tuple:
        w, loaded = cfg.window, self.loaded
        return (_image_digest(image), cfg.readout,
                (w.short_side, w.crop, w.stride, w.antialias, w.patch_fit),
                id(loaded.model), loaded.name, str(loaded.device), loaded.compute_dtype)

    # -- the window pass ---------------------------------------------------------------------
    def window_embeddings(self, image: np.ndarray
                          ) -> Generator[Progress, None, WindowEmbeddings]:
        """Dense embeddings of every sliding window of ``image`` (cached for the last image).

        Parameters
        ----------
        image : np.ndarray
            ``(H, W, 3)`` uint8 or float in [0, 1] (:func:`clipseg.image.validate_rgb`).

        Yields
        ------
        Progress
            ``("windows", done, total)`` once per batch, in windows. A cache hit yields
            ``("windows", total, total)`` once.

        Returns
        -------
        WindowEmbeddings
        """
        image = validate_rgb(image)
        cfg = self.resolved_config
        key = self._key(image, cfg)
        if self._cache is not None and self._cache.key == key:
            n = len(self._cache.embeddings.boxes)
            yield Progress("windows", n, n)
            return self._cache.embeddings
        self._cache = None  # a new image: the old cache must not outlive a cancelled run
        plan = plan_windows(_image01(image), cfg.window)
        resized, boxes = plan.resized, plan.boxes
        groups: list[tuple[list[Box], torch.Tensor]] = []
        done = 0
        batch = cfg.window.batch_size
        for size_boxes in plan.groups():
            start = 0
            while start < len(size_boxes):
                chunk = size_boxes[start:start + batch]
                emb, batch = self._encode_with_retry(resized, chunk, batch)
                chunk = chunk[:emb.shape[0]]
                groups.append((chunk, emb))
                start += len(chunk)
                done += len(chunk)
                yield Progress("windows", done, len(boxes))
        result = WindowEmbeddings(groups=groups, resized_size=resized.shape[:2],
                                  original_size=image.shape[:2])
        self._cache = _Cache(key=key, embeddings=result, image=np.array(image, copy=True))
        return result

    def _encode_with_retry(self, resized: np.ndarray, boxes: list[Box], batch: int
                           ) -> tuple[torch.Tensor, int]:
        """Encode ``boxes[:batch]``, halving ``batch`` on out-of-memory; returns (emb, batch)."""
        device = self.loaded.device
        while True:
            try:
                return self._encode(resized, boxes[:batch]), batch
            except torch.OutOfMemoryError as exc:
                if batch == 1:
                    y0, x0, y1, x1 = boxes[0]
                    raise ClipSegError(
                        f"out of memory on {device} encoding a single {y1 - y0}x{x1 - x0} "
                        f"window with {self.loaded.name}; expected it to fit with "
                        "batch_size=1. Use device='cpu', a smaller crop, or a smaller "
                        "short_side.") from exc
            # Outside the except block the failed pass's tensors are no longer referenced.
            if device.type == "cuda":
                torch.cuda.empty_cache()
            warnings.warn(f"out of memory on {device} with {batch} windows per batch; "
                          f"retrying with {batch // 2}", RuntimeWarning, stacklevel=3)
            batch //= 2

    def _encode(self, resized: np.ndarray, boxes: list[Box]) -> torch.Tensor:
        """``(n, h, w, D)`` CPU embeddings of same-size ``boxes`` of the resized image."""
        loaded, encoder = self.loaded, self.encoder
        pixels = window_pixels(resized, boxes, loaded.mean, loaded.std, loaded.device,
                               encoder.tower.patch_size, self.resolved_config.window.patch_fit)
        dtype = loaded.compute_dtype
        with torch.no_grad(), torch.autocast(loaded.device.type, dtype=dtype,
                                             enabled=dtype != torch.float32):
            emb = encoder(pixels)
        store = torch.float16 if dtype == torch.float16 else torch.float32
        return emb.to(device="cpu", dtype=store)

    # -- from embeddings to labels -----------------------------------------------------------
    def _encode_text(self, specs: list[ClassSpec], labels: LabelConfig
                     ) -> Generator[Progress, None, tuple[torch.Tensor, torch.Tensor]]:
        # One progress step per synonym not yet cached: 80 prompts each, seconds on a CPU.
        yield Progress("text", 0, 1)
        return (yield from relay(self.text_encoder_for(labels.prompts).iter_encode(specs),
                                 lambda step: Progress("text", *step)))

    def _finish(self, cache: _Cache, specs: list[ClassSpec], text: torch.Tensor,
                owner: torch.Tensor, labels: LabelConfig, refine: RefineConfig,
                reused: bool) -> Generator[Progress, None, SegmentationResult]:
        """Stitched logits -> optional PAMR -> labels, from cached window embeddings."""
        loaded = self.loaded
        k = len(specs)
        # max_logit: one map per class (best synonym on the patch grid); softmax_then_max: one
        # map per synonym, reduced to classes after the softmax (labels_from_logits).
        per_synonym = labels.synonym_reduce == "softmax_then_max"
        maps = int(text.shape[0]) if per_synonym else k
        emb = cache.embeddings
        stitcher = Stitcher(maps, *emb.resized_size)
        with torch.no_grad():
            for boxes, tensor in emb.groups:  # boxes of one group share their size
                if per_synonym:
                    cos = tensor.to(loaded.device).float() @ text.to(
                        device=loaded.device, dtype=torch.float32).T          # (n, h, w, S)
                else:
                    cos = class_logits(tensor.to(loaded.device), text, owner, k)  # (n, h, w, K)
                cos = cos.permute(0, 3, 1, 2)
                size = (boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
                step = max(1, UPSAMPLE_FLOATS // (maps * size[0] * size[1]))
                for i in range(0, len(boxes), step):
                    windows = upsample_logits(cos[i:i + step], size)      # (n', K, bh, bw)
                    for box, window in zip(boxes[i:i + step], windows):
                        stitcher.add(box, window)
            logits = upsample_logits(stitcher.result(), emb.original_size)
            del stitcher
            if refine.pamr:
                yield Progress("refine", 0, 1)
                if refine.pamr_guide == "resized":
                    image = resized_guide(_image01(cache.image), self.resolved_config.window)
                else:
                    image = torch.from_numpy(_image01(cache.image)).permute(2, 0, 1)
                logits = pamr(image, logits, refine.pamr_dilations, refine.pamr_iterations,
                              refine.pamr_tile, device=loaded.device)
                del image  # the guide (12 bytes a pixel) is not needed by the labels
                yield Progress("refine", 1, 1)
        yield Progress("labels", 0, 1)
        labels = self._resolve_labels(labels)
        names = [spec.name for spec in specs]
        label_image, probs = labels_from_logits(logits, names, labels, labels.logit_scale,
                                                owner=owner if per_synonym else None)
        yield Progress("labels", 1, 1)
        cache.classes = specs
        config = dataclasses.replace(self.resolved_config, labels=labels, refine=refine)
        return SegmentationResult(labels=label_image, probs=probs, class_names=names,
                                  config=config, model_name=loaded.name,
                                  reused_embeddings=reused)

    def run(self, image: np.ndarray, classes: Classes, *, labels: LabelConfig | None = None,
            refine: RefineConfig | None = None
            ) -> Generator[Progress, None, SegmentationResult]:
        """Segment ``image`` into ``classes``; a generator of progress returning the result.

        When ``image`` is the last image (same pixels) the cached window embeddings are used
        and no ViT pass runs (``result.reused_embeddings``); so callers that change only the
        classes, label or refine options can simply run again.

        Parameters
        ----------
        image : np.ndarray
            ``(H, W, 3)`` uint8 or float in [0, 1].
        classes : str, list of str or list of ClassSpec
            See :func:`clipseg.text.parse_classes` (``"road; street, building"``).
        labels, refine : LabelConfig, RefineConfig or None
            Options for this run instead of the configured ones (they do not affect the
            window embeddings, so the cache stays valid across them).

        Yields
        ------
        Progress
            ``text``, then ``windows`` once per window batch, then ``refine`` (with PAMR) and
            ``labels``. Stop iterating to cancel: the window cache is only written once every
            window is encoded.

        Returns
        -------
        SegmentationResult
        """
        specs = parse_classes(classes)
        labels, refine = self._options(labels, refine)
        class_threshold_vector([s.name for s in specs], labels)  # fail before the ViT pass
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
            self.check_memory(image.shape[:2], specs, labels=labels, refine=refine,
                              image_bytes=3 * image.dtype.itemsize)  # before any work
        text, owner = yield from self._encode_text(specs, labels)
        before = self._cache
        yield from self.window_embeddings(image)
        cache = self._cache
        if cache is None:
            raise ClipSegError("internal: window embeddings finished without a cache entry")
        return (yield from self._finish(cache, specs, text, owner, labels, refine,
                                        reused=cache is before))

    def segment(self, image: np.ndarray, classes: Classes, *, labels: LabelConfig | None = None,
                refine: RefineConfig | None = None) -> SegmentationResult:
        """:meth:`run` drained: the result without progress."""
        return drain(self.run(image, classes, labels=labels, refine=refine))

    def is_cached(self, image: np.ndarray) -> bool:
        """Whether a run on ``image`` would reuse cached window embeddings (no ViT pass)."""
        return self._cache is not None and self._cache.key == self._key(
            validate_rgb(image), self.resolved_config)

    def check_memory(self, shape: tuple[int, int], classes: Classes, *,
                     labels: LabelConfig | None = None, refine: RefineConfig | None = None,
                     image_bytes: int = 3, cached: bool = False) -> MemoryEstimate:
        """Estimate the peak memory of a run on an image of ``shape`` and refuse it when it does
        not fit (:func:`clipseg.memory.check_memory`; the budget is ``config.model.max_memory``,
        else the memory available now).

        Raises
        ------
        InvalidConfigError
            The estimate is above the budget, or one window does not fit on the GPU; the
            message names the option to change.
        """
        specs = parse_classes(classes)
        labels, refine = self._options(labels, refine)
        per_synonym = labels.synonym_reduce == "softmax_then_max"
        maps = sum(len(s.synonyms) for s in specs) if per_synonym else len(specs)
        cfg = dataclasses.replace(self.resolved_config, refine=refine)
        loaded = self.loaded
        facts = ModelFacts.of_tower(self.encoder.tower)
        feature_bytes = 2 if loaded.compute_dtype == torch.float16 else 4
        estimate = check_memory(cfg, int(shape[0]), int(shape[1]), maps, facts=facts,
                                image_bytes=image_bytes, feature_bytes=feature_bytes,
                                cached=cached)
        if loaded.device.type == "cuda" and not cached and cfg.model.max_memory != 0:
            total = torch.cuda.get_device_properties(loaded.device).total_memory
            if estimate.device > total:
                raise InvalidConfigError(
                    f"memory: expected one window to fit in the {format_bytes(total)} of "
                    f"{loaded.device}, got an estimated {format_bytes(estimate.device)} for a "
                    f"{estimate.working[0]}x{estimate.working[1]} working image with crop "
                    f"{cfg.window.crop}; set a crop (e.g. 224), lower short_side, or use "
                    "device cpu")
        return estimate

    def _options(self, labels: LabelConfig | None, refine: RefineConfig | None
                 ) -> tuple[LabelConfig, RefineConfig]:
        """Per-call label/refine options, checked, or the configured ones."""
        for name, value, cls in (("labels", labels, LabelConfig), ("refine", refine,
                                                                    RefineConfig)):
            if value is not None and not isinstance(value, cls):
                raise InvalidConfigError(f"expected {name} as a {cls.__name__} or None, "
                                         f"got {describe(value)}")
        return labels or self.config.labels, refine or self.config.refine

    def relabel(self, classes: Classes | None = None, *, labels: LabelConfig | None = None,
                refine: RefineConfig | None = None) -> SegmentationResult:
        """Re-label the last image from its cached window embeddings (no ViT pass).

        :meth:`run_relabel` drained; see there.
        """
        return drain(self.run_relabel(classes, labels=labels, refine=refine))

    def run_relabel(self, classes: Classes | None = None, *, labels: LabelConfig | None = None,
                    refine: RefineConfig | None = None
                    ) -> Generator[Progress, None, SegmentationResult]:
        """Re-label the last image from its cached window embeddings, yielding progress.

        Only new class names cost anything (text encoding, one ``Progress("text")`` step per
        synonym); stitching, PAMR and labels follow. Checks happen when iteration starts.

        Parameters
        ----------
        classes : str, list of str / ClassSpec, or None
            New class list; None keeps the last one.
        labels, refine : LabelConfig, RefineConfig or None
            New thresholds / PAMR options; None keeps the configured ones.

        Raises
        ------
        ClipSegError
            Nothing is cached (no finished run, or the last run was cancelled).
        """
        cache = self._cache
        if cache is None:
            raise ClipSegError("relabel: expected window embeddings of a finished run, got none "
                               "(no run yet, or the last run was cancelled); call run() or "
                               "segment() first")
        if classes is None:
            if cache.classes is None:
                raise InvalidInputError("relabel: expected a class list (the cached run has "
                                        "none yet), got None")
            specs = cache.classes
        else:
            specs = parse_classes(classes)
        labels, refine = self._options(labels, refine)
        class_threshold_vector([s.name for s in specs], labels)  # fail before any work
        self.check_memory(cache.image.shape[:2], specs, labels=labels, refine=refine,
                          image_bytes=3 * cache.image.dtype.itemsize, cached=True)
        text, owner = yield from self._encode_text(specs, labels)
        return (yield from self._finish(cache, specs, text, owner, labels, refine, reused=True))


def segment(image: np.ndarray, classes: Classes,
            model: str | LoadedModel | nn.Module | None = None,
            **options: Any) -> SegmentationResult:
    """One-call segmentation: ``segment(image, "cat, dog", tau=5, pamr=True)``.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 or float in [0, 1].
    classes : str or list
        Class list (:func:`clipseg.text.parse_classes`).
    model : str, LoadedModel, open_clip CLIP module or None
        A name is the flat ``model`` option (registry key or open_clip ``"ARCH/TAG"``), loaded
        with :func:`clipseg.models.load_model`; None loads the default ``"ViT-B-16/openai"``.
    **options
        Flat :class:`~clipseg.config.SegmentConfig` option names (``device``, ``checkpoint``,
        ``tau``, ``crop``, ``threshold``, ``pamr``, ...).
    """
    if isinstance(model, str):
        options = {**options, "model": model}
        model = None
    config = SegmentConfig.from_flat(options)
    return Segmenter(config, model=model).segment(image, classes)
