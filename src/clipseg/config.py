"""Validated, frozen configuration.

Every option of the method lives here, once. The widget's fields, the CLI's flags and the JSON
sidecar written next to each label image all map onto these fields by name (see
:meth:`SegmentConfig.to_flat` / :meth:`SegmentConfig.from_flat`), so a new option is added in one
place. Field names follow ``METHOD.md`` (``middle_layer`` counted from 1, ``tau``, ``eps``,
``min_samples``, ``dsi_layers``).

``None`` in a model-dependent field (``middle_layer``, ``crop``, ``stride``, ``logit_scale``)
means "take the value of the model's registry entry" (:mod:`clipseg.models.registry`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import InvalidConfigError

#: Readouts selectable by name. ``clipseg`` is the paper's method (CRA + DSI). The baselines
#: follow their public reference code; ``kk_last`` and ``kk_middle`` are the paper's Table 4
#: ablations (last-layer k-k; middle-layer k-k without the relation term); ``qk`` is the Table 4
#: baseline (plain q-k attention in the reformed block); ``vanilla`` is the unmodified last block
#: (residual + FFN), kept as the proof that the engine's pass is faithful to open_clip.
READOUTS: tuple[str, ...] = (
    "clipseg",
    "maskclip",
    "sclip",
    "clearclip",
    "naclip",
    "kk_last",
    "kk_middle",
    "qk",
    "vanilla",
)

DSI_MODES: tuple[str, ...] = ("value_mean", "embedding_mean")
#: Prompt sets for class names (see :func:`clipseg.text.prompt_templates`).
PROMPT_SETS: tuple[str, ...] = ("imagenet80", "imagenet7", "name")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def _fail(name: str, expected: str, got: Any) -> None:
    raise InvalidConfigError(f"{name}: expected {expected}, got {got!r}")


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(name, "a finite number" + (" or None" if allow_none else ""), value)
    if low is not None and (value <= low if low_open else value < low):
        _fail(name, f"a number {'>' if low_open else '>='} {low}", value)
    if high is not None and value > high:
        _fail(name, f"a number <= {high}", value)


def _check_int(name: str, value: Any, *, low: int | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, "an integer" + (" or None" if allow_none else ""), value)
    if low is not None and value < low:
        _fail(name, f"an integer >= {low}", value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(name, f"one of {', '.join(choices)}", value)


@dataclass(frozen=True)
class ModelConfig:
    """Which CLIP to load and where to run it.

    Parameters
    ----------
    model : str
        A registry key (``"ViT-B-16/openai"``, see :func:`clipseg.models.list_models`) or any
        open_clip ``"ARCH/TAG"`` or architecture name.
    pretrained : str or None
        Override the pretrained tag of the registry entry (``"laion400m_e32"``).
    checkpoint : str or None
        Path of a local weights file (``.safetensors``, or a ``torch.save`` file that loads with
        ``weights_only=True``). Takes precedence over ``pretrained``.
    device : {"auto", "cpu", "cuda", "mps"} or "cuda:N"
    precision : {"auto", "fp32", "fp16", "bf16"}
        ``auto`` = fp16 autocast on CUDA, fp32 elsewhere.
    cache_dir : str or None
        Where open_clip keeps downloaded weights (default: its own cache).
    text_cache : str
        Folder of the persistent text-embedding cache: ``auto`` = ``$CLIPSEG_TEXT_CACHE`` or the
        user cache folder (``~/.cache/clipseg/text`` on Linux), ``none`` = off, else a folder
        (:mod:`clipseg.text_cache`).
    """

    model: str = "ViT-B-16/openai"
    pretrained: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str | None = None
    text_cache: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            _fail("model", "a non-empty model name", self.model)
        if self.pretrained is not None and (not isinstance(self.pretrained, str)
                                            or not self.pretrained.strip()):
            _fail("pretrained", "a pretrained tag or None", self.pretrained)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str)
                                            or not self.checkpoint.strip()):
            _fail("checkpoint", "a file path or None", self.checkpoint)
        dev = self.device
        if not isinstance(dev, str) or not (dev in DEVICES or (dev.startswith("cuda:")
                                                              and dev[5:].isdigit())):
            _fail("device", f"one of {', '.join(DEVICES)} or 'cuda:N'", dev)
        _check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.text_cache, str) or not self.text_cache.strip():
            _fail("text_cache", "'auto', 'none' or a folder", self.text_cache)


@dataclass(frozen=True)
class ReadoutConfig:
    """How the last block is re-formed into dense embeddings (METHOD.md).

    Parameters
    ----------
    method : str
        One of :data:`READOUTS`.
    middle_layer : int or None
        Block M whose keys build CRA's attention, counted from 1. None: the registry's value
        (or ``ceil(L / 2)`` for a model without an entry).
    tau : float
        Temperature multiplying ``k_M k_M^T + G(k_M)`` (paper: 6).
    eps : float
        Cosine-distance radius of the relation term G (paper: 0.75); also G's weight.
    min_samples : int
        DBSCAN's ``min_samples`` for G, the point itself included (open choice; default 1 makes
        clusters the connected components of the ``d < eps`` graph).
    relation : bool
        Add the relation term G (CRA); ``False`` gives the ``kk_middle`` ablation.
    dsi_layers : int
        How many value tensors DSI combines: 1 = ``v_L`` alone, 3 = ``v_L`` plus the two blocks
        before it (paper's l = -3).
    dsi_mode : {"value_mean", "embedding_mean"}
        Combine DSI's values before attention (mean of value tensors; default) or average the
        final normalised embeddings of each value source.
    cls_in_attention : bool
        Whether the class token takes part in CRA's attention (open choice; default no).
    attn_scale : float or None
        Scale ``s`` of the baselines' self-self attention; None = ``head_dim ** -0.5``.
    naclip_std : float
        Std of NACLIP's Gaussian neighbourhood window, in patches (5).
    """

    method: str = "clipseg"
    middle_layer: int | None = None
    tau: float = 6.0
    eps: float = 0.75
    min_samples: int = 1
    relation: bool = True
    dsi_layers: int = 3
    dsi_mode: str = "value_mean"
    cls_in_attention: bool = False
    attn_scale: float | None = None
    naclip_std: float = 5.0

    def __post_init__(self) -> None:
        _check_choice("method", self.method, READOUTS)
        _check_int("middle_layer", self.middle_layer, low=1, allow_none=True)
        _check_number("tau", self.tau, low=0.0, low_open=True)
        _check_number("eps", self.eps, low=0.0, high=2.0, low_open=True)
        _check_int("min_samples", self.min_samples, low=1)
        if not isinstance(self.relation, bool):
            _fail("relation", "True or False", self.relation)
        _check_int("dsi_layers", self.dsi_layers, low=1)
        _check_choice("dsi_mode", self.dsi_mode, DSI_MODES)
        if not isinstance(self.cls_in_attention, bool):
            _fail("cls_in_attention", "True or False", self.cls_in_attention)
        _check_number("attn_scale", self.attn_scale, low=0.0, low_open=True, allow_none=True)
        _check_number("naclip_std", self.naclip_std, low=0.0, low_open=True)


@dataclass(frozen=True)
class WindowConfig:
    """Resize and sliding-window geometry.

    Parameters
    ----------
    short_side : int or None
        Resize so the image's short side has this many pixels before windowing (448); None
        keeps the original size.
    crop, stride : int or None
        Window size and step in resized pixels. None: the registry's values (224 / 112 for
        /16 models).
    batch_size : int
        Windows per forward pass (and per progress step).
    """

    short_side: int | None = 448
    crop: int | None = None
    stride: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        _check_int("short_side", self.short_side, low=16, allow_none=True)
        _check_int("crop", self.crop, low=16, allow_none=True)
        _check_int("stride", self.stride, low=1, allow_none=True)
        if self.crop is not None and self.stride is not None and self.stride > self.crop:
            _fail("stride", f"at most crop ({self.crop}) so windows cover the image", self.stride)
        _check_int("batch_size", self.batch_size, low=1)


@dataclass(frozen=True)
class LabelConfig:
    """From cosine logits to a label image.

    Label 0 means *unlabeled*; class k (in the order given) gets label k + 1.

    Parameters
    ----------
    logit_scale : float or None
        Multiplies cosine similarities before the softmax over classes (40; ClearCLIP uses 50).
        None: the registry's value.
    threshold : float
        Pixels whose top class probability is below this get label 0 (0 = label every pixel).
    class_thresholds : mapping of class name to float
        Per-class overrides of ``threshold`` (stored as a sorted tuple of pairs so the config
        stays hashable).
    prompts : {"imagenet80", "imagenet7", "name"}
        Templates each class name is put into before text encoding: ``imagenet80`` = CLIP's 80
        ImageNet prompts (open_clip's ``OPENAI_IMAGENET_TEMPLATES``; the paper's protocol),
        ``imagenet7`` = CLIP's 7-prompt subset (``SIMPLE_IMAGENET_TEMPLATES``; about 11 times
        less text encoding, which matters on a CPU), ``name`` = the bare name.
    """

    logit_scale: float | None = None
    threshold: float = 0.0
    class_thresholds: tuple[tuple[str, float], ...] = ()
    prompts: str = "imagenet80"

    def __post_init__(self) -> None:
        _check_number("logit_scale", self.logit_scale, low=0.0, low_open=True, allow_none=True)
        _check_number("threshold", self.threshold, low=0.0, high=1.0)
        ct = self.class_thresholds
        if isinstance(ct, Mapping):
            ct = tuple(sorted(ct.items()))
        try:
            ct = tuple((str(k), v) for k, v in ct)
        except (TypeError, ValueError):
            _fail("class_thresholds", "a mapping of class name to threshold", self.class_thresholds)
        for name, value in ct:
            if not name.strip():
                _fail("class_thresholds", "non-empty class names", name)
            _check_number(f"class_thresholds[{name!r}]", value, low=0.0, high=1.0)
        object.__setattr__(self, "class_thresholds", tuple(sorted((k, float(v)) for k, v in ct)))
        _check_choice("prompts", self.prompts, PROMPT_SETS)

    def threshold_for(self, name: str) -> float:
        """Threshold that applies to class ``name`` (its override, else ``threshold``)."""
        return dict(self.class_thresholds).get(name, self.threshold)


@dataclass(frozen=True)
class RefineConfig:
    """PAMR post-processing (Araslanov & Roth 2020).

    Parameters
    ----------
    pamr : bool
        Refine the stitched logits with PAMR.
    pamr_dilations : tuple of int
        Dilations of the 3x3 neighbourhoods ((8, 16); TCL uses (1, 2, 4, 8, 12, 24)).
    pamr_iterations : int
        Propagation steps (10).
    pamr_tile : int
        Core tile side in pixels; each tile is padded by a halo of
        ``pamr_iterations * max(pamr_dilations)`` so tiling does not change the result.
    """

    pamr: bool = False
    pamr_dilations: tuple[int, ...] = (8, 16)
    pamr_iterations: int = 10
    pamr_tile: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.pamr, bool):
            _fail("pamr", "True or False", self.pamr)
        dil = self.pamr_dilations
        if isinstance(dil, int) or not all(isinstance(d, int) and not isinstance(d, bool)
                                           and d >= 1 for d in dil) or len(tuple(dil)) == 0:
            _fail("pamr_dilations", "a non-empty sequence of positive integers", dil)
        object.__setattr__(self, "pamr_dilations", tuple(dil))
        _check_int("pamr_iterations", self.pamr_iterations, low=1)
        _check_int("pamr_tile", self.pamr_tile, low=16)


_GROUPS = {
    "model": ModelConfig,
    "readout": ReadoutConfig,
    "window": WindowConfig,
    "labels": LabelConfig,
    "refine": RefineConfig,
}


@dataclass(frozen=True)
class SegmentConfig:
    """Everything a segmentation run depends on, grouped by job."""

    model: ModelConfig = field(default_factory=ModelConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def __post_init__(self) -> None:
        for name, cls in _GROUPS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                _fail(name, f"a {cls.__name__}", value)

    # -- flat view: one namespace for CLI flags, widget fields and sidecar JSON -----------------
    @staticmethod
    def flat_fields() -> dict[str, tuple[str, dataclasses.Field]]:
        """Map each flat option name to (group name, dataclass field)."""
        out: dict[str, tuple[str, dataclasses.Field]] = {}
        for group, cls in _GROUPS.items():
            for f in fields(cls):
                out[f.name] = (group, f)
        return out

    def to_flat(self) -> dict[str, Any]:
        """All options as one JSON-friendly dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for group in _GROUPS:
            for key, value in dataclasses.asdict(getattr(self, group)).items():
                if key == "class_thresholds":
                    value = {k: v for k, v in value}
                elif isinstance(value, tuple):
                    value = list(value)
                out[key] = value
        return out

    @classmethod
    def from_flat(cls, options: Mapping[str, Any] | None = None, **kwargs: Any) -> "SegmentConfig":
        """Build a config from flat option names; unknown names are an error."""
        merged = dict(options or {})
        merged.update(kwargs)
        return cls().replace(**merged)

    def replace(self, **options: Any) -> "SegmentConfig":
        """A copy with some flat options changed: ``cfg.replace(tau=5, pamr=True)``."""
        known = self.flat_fields()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InvalidConfigError(
                f"unknown option(s) {', '.join(unknown)}; expected some of: "
                + ", ".join(sorted(known)))
        per_group: dict[str, dict[str, Any]] = {}
        for key, value in options.items():
            group, f = known[key]
            if isinstance(value, list):
                value = tuple(value)
            per_group.setdefault(group, {})[key] = value
        changes = {g: dataclasses.replace(getattr(self, g), **kv) for g, kv in per_group.items()}
        return dataclasses.replace(self, **changes)
