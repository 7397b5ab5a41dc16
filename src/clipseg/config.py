"""Validated, frozen configuration: every option of a run, declared once.

Each option is a field of one of the group dataclasses below, declared with :func:`option`: its
default, help text, choices, bounds, unit, what ``None`` means and where the widget shows it
live in the field's ``metadata``. Everything else is generated from that one declaration:

- validation (:func:`validate_fields`, called by each group's ``__post_init__``);
- the ``clipseg`` command's flags (:func:`clipseg.apps.cli.add_config_arguments`);
- ``docs/options.md`` (``scripts/gen_options_doc.py``; a test keeps it current);
- the napari widget's settings form (``napari_clipseg.options_form``).

:func:`option_specs` is the reflection the generators read. Field names follow ``METHOD.md``
(``middle_layer`` counted from 1, ``tau``, ``eps``, ``min_samples``, ``dsi_layers``), and the flat
names (one namespace for all groups) are also the keys of the JSON sidecar written next to each
label image (:meth:`SegmentConfig.to_flat` / :meth:`SegmentConfig.from_flat`).

``None`` in a model-dependent field (``middle_layer``, ``crop``, ``stride``, ``short_side``,
``logit_scale``) means "take the value of the model's registry entry";
:func:`clipseg.resolve.resolve_config` fills them in, and every caller goes through it.

This module imports nothing heavy (no torch), so the command line can parse and check options
before loading anything.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

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
#: Resampling of positional embeddings for windows other than the training size (mirrors
#: ``clipseg.models.towers.POS_INTERP_MODES``, which this light module cannot import).
POS_INTERPS: tuple[str, ...] = ("bilinear", "bicubic", "bicubic_scale")
#: How a window side that is not a multiple of the patch size is fed to the ViT.
PATCH_FITS: tuple[str, ...] = ("resize", "drop")
#: How a class's synonyms are combined into one score.
SYNONYM_REDUCES: tuple[str, ...] = ("max_logit", "softmax_then_max")
#: Which image guides PAMR.
PAMR_GUIDES: tuple[str, ...] = ("original", "resized")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")

#: Where the widget shows an option: in the main form, under "Advanced", or not at all (the
#: panel has its own control for it, or it is for scripts and the command line only).
WIDGET_PLACES: tuple[str, ...] = ("main", "advanced", "hidden")


# --------------------------------------------------------------------------------------------
# declaring an option
# --------------------------------------------------------------------------------------------
def option(default: Any = MISSING, *, help: str, label: str | None = None,
           choices: tuple[str, ...] | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, unit: str | None = None,
           none: str | None = None, widget: str = "advanced", step: float | None = None,
           check: Callable[[str, Any], None] | None = None,
           default_factory: Any = MISSING) -> Any:
    """Declare a configuration field with everything the generators need.

    Parameters
    ----------
    default, default_factory
        As for :func:`dataclasses.field`.
    help : str
        One or two sentences in the user's words: the CLI's help, the docs' description and the
        widget's tooltip. The first sentence must stand alone (it is the short form).
    label : str or None
        Name shown in the widget (default: the field name with spaces).
    choices : tuple of str or None
        Allowed values of a text option.
    low, high : float or None
        Bounds of a number (``low`` exclusive when ``low_open``).
    unit : str or None
        Unit of a number ("px", "windows"...), shown in help and docs.
    none : str or None
        What ``None`` means for this option ("the model's value"); None makes ``None`` invalid
        unless the field's type allows it.
    widget : {"main", "advanced", "hidden"}
        Where the napari widget shows it.
    step : float or None
        The widget's step for a number.
    check : callable or None
        Extra validation ``check(name, value)`` raising :class:`InvalidConfigError`.
    """
    if widget not in WIDGET_PLACES:
        raise ValueError(f"option widget: expected one of {WIDGET_PLACES}, got {widget!r}")
    metadata = {"help": help, "label": label, "choices": choices, "low": low, "high": high,
                "low_open": low_open, "unit": unit, "none": none, "widget": widget,
                "step": step, "check": check}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """What one declared option is, read from its field (see :func:`option_specs`).

    ``kind`` is one of ``bool``, ``int``, ``float``, ``str``, ``ints`` (a tuple of integers) and
    ``mapping`` (class name to number); ``optional`` says whether ``None`` is allowed.
    """

    name: str
    group: str
    kind: str
    optional: bool
    default: Any
    help: str
    label: str
    choices: tuple[str, ...] | None
    low: float | None
    high: float | None
    low_open: bool
    unit: str | None
    none: str | None
    widget: str
    step: float | None
    #: the option has its own check, which then decides what is valid: ``choices`` are the
    #: usual values (the widget's list), not all of them (``device`` also takes ``cuda:N``)
    checked: bool = False

    @property
    def short_help(self) -> str:
        """The first sentence of the help text, without its full stop."""
        return self.help.split(". ")[0].rstrip(".")

    @property
    def flag(self) -> str:
        """The command-line flag: ``--middle-layer``."""
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """``"one of a, b"``, ``"> 0"``, ``"1 .. 64"`` or ``""``, for help and docs."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}, <= {self.high:g}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"<= {self.high:g}"
        return ""


def _kind(hint: Any) -> tuple[str, bool]:
    """(kind, optional) of a field's resolved type hint."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    if hint in (bool, int, float, str):
        return hint.__name__, optional
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and inner[:1] == (int,):
        return "ints", optional
    if origin is tuple and inner and typing.get_origin(inner[0]) is tuple:
        return "mapping", optional
    raise TypeError(f"option type {hint!r} is not one the generators know")


def _specs_of(cls: type, group: str) -> list[OptionSpec]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option()")
        kind, optional = _kind(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append(OptionSpec(
            name=f.name, group=group, kind=kind, optional=optional, default=default,
            help=meta["help"], label=meta["label"] or f.name.replace("_", " "),
            choices=meta["choices"], low=meta["low"], high=meta["high"],
            low_open=meta["low_open"], unit=meta["unit"], none=meta["none"],
            widget=meta["widget"], step=meta["step"], checked=meta["check"] is not None))
    return out


# --------------------------------------------------------------------------------------------
# validation, generated from the declarations
# --------------------------------------------------------------------------------------------
def _fail(name: str, expected: str, got: Any) -> None:
    raise InvalidConfigError(f"{name}: expected {expected}, got {got!r}")


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, allow_none: bool = False, integer: bool = False
                  ) -> None:
    if value is None and allow_none:
        return
    what = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not math.isfinite(value):
        _fail(name, what + (" or None" if allow_none else ""), value)
    noun = "an integer" if integer else "a number"
    if low is not None and (value <= low if low_open else value < low):
        _fail(name, f"{noun} {'>' if low_open else '>='} {low}", value)
    if high is not None and value > high:
        _fail(name, f"{noun} <= {high}", value)


def validate_fields(obj: Any) -> None:
    """Check every field of a config dataclass against its declaration (type, choices, bounds,
    extra ``check``). Called from each group's ``__post_init__``."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        name, value, meta = f.name, getattr(obj, f.name), f.metadata
        kind, optional = _kind(hints[name])
        if value is None:
            if not optional:
                _fail(name, _expected_kind(kind, meta), value)
            continue
        if kind == "bool":
            if not isinstance(value, bool):
                _fail(name, "True or False", value)
        elif kind in ("int", "float"):
            _check_number(name, value, low=meta["low"], high=meta["high"],
                          low_open=meta["low_open"], allow_none=optional,
                          integer=kind == "int")
        elif kind == "ints" and (meta["low"] is not None or meta["high"] is not None):
            for item in value:  # the bounds of a sequence hold for each of its numbers
                _check_number(name, item, low=meta["low"], high=meta["high"],
                              low_open=meta["low_open"], integer=True)
        elif kind == "str":
            if meta["choices"] and meta["check"] is None:
                if value not in meta["choices"]:
                    _fail(name, f"one of {', '.join(meta['choices'])}", value)
            elif not isinstance(value, str) or not value.strip():
                _fail(name, _expected_kind(kind, meta) + (" or None" if optional else ""),
                      value)
        if meta["check"] is not None:
            meta["check"](name, value)


def _expected_kind(kind: str, meta: Mapping[str, Any]) -> str:
    if meta.get("choices"):
        return f"one of {', '.join(meta['choices'])}"
    return {"bool": "True or False", "int": "an integer", "float": "a finite number",
            "str": "a non-empty text", "ints": "a sequence of integers",
            "mapping": "a mapping of class name to number"}[kind]


def _check_device(name: str, value: Any) -> None:
    if not isinstance(value, str) or not (value in DEVICES or (
            value.startswith("cuda:") and value[5:].isdigit())):
        _fail(name, f"one of {', '.join(DEVICES)} or 'cuda:N'", value)


def _check_positive_ints(name: str, value: Any) -> None:
    if isinstance(value, (int, str)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value) \
            or len(tuple(value)) == 0:
        _fail(name, "a non-empty sequence of positive integers", value)


#: Bounds of PAMR's options: past them a run costs hours or terabytes and gains nothing (a
#: dilation wider than the image only repeats its border; 10 iterations already converge).
MAX_PAMR_DILATION = 1024
MAX_PAMR_DILATIONS = 16
MAX_PAMR_ITERATIONS = 1000


def _check_dilations(name: str, value: Any) -> None:
    _check_positive_ints(name, value)
    if len(tuple(value)) > MAX_PAMR_DILATIONS:
        _fail(name, f"at most {MAX_PAMR_DILATIONS} dilations", value)


def _check_short_side(name: str, value: Any) -> None:
    if value != 0 and value < 16:
        _fail(name, "0 (keep the original size) or an integer >= 16", value)


def _check_crop(name: str, value: Any) -> None:
    if value != 0 and value < 16:
        _fail(name, "0 (one window: the whole resized image) or an integer >= 16", value)


# --------------------------------------------------------------------------------------------
# the groups
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """Which CLIP to load and where to run it (options: ``docs/options.md``)."""

    model: str = option(
        "ViT-B-16/openai", widget="hidden",
        help="The CLIP to use: a registry name (see `clipseg models`), an open_clip "
             "ARCH/TAG or architecture name, or an hf-hub: name.")
    pretrained: str | None = option(
        None, widget="hidden", none="the registry entry's tag",
        help="Pretrained tag that replaces the registry entry's (e.g. laion400m_e32).")
    checkpoint: str | None = option(
        None, widget="hidden", none="the registry's weights",
        help="Local weights file for the chosen architecture (.safetensors, or a torch.save "
             "file that loads with weights_only). Takes precedence over the pretrained tag.")
    device: str = option(
        "auto", widget="hidden", choices=DEVICES, check=_check_device,
        help="Where to run: auto picks CUDA, then MPS, then the CPU; cuda:N picks a GPU.")
    precision: str = option(
        "auto", choices=PRECISIONS,
        help="Number format of the forward pass. auto = fp16 autocast on CUDA, fp32 "
             "elsewhere.")
    cache_dir: str | None = option(
        None, widget="hidden", none="open_clip's own cache",
        help="Folder where open_clip keeps downloaded weights.")
    max_memory: float | None = option(
        None, low=0.0, unit="GiB", step=0.5, widget="hidden",
        none="the memory available when the run starts",
        help="Refuse a run whose estimated peak memory (working image, windows, features, "
             "logits, PAMR) is above this many GiB, before any work; 0 turns the check off.")
    text_cache: str = option(
        "auto", widget="hidden",
        help="Folder of the persistent text-embedding cache: auto = $CLIPSEG_TEXT_CACHE or the "
             "user cache folder (~/.cache/clipseg/text on Linux), none = off, else a folder.")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(frozen=True)
class ReadoutConfig:
    """How the last block is re-formed into dense embeddings (``METHOD.md``)."""

    method: str = option(
        "clipseg", widget="main", label="readout", choices=READOUTS,
        help="How the model's features become a class per pixel: clipseg is this project's "
             "method (CRA + DSI, AAAI 2025); the others are published alternatives, for "
             "comparison.")
    middle_layer: int | None = option(
        None, low=1, none="the model's value",
        help="Block M (counted from 1) whose keys build CRA's attention. None takes the "
             "registry's value, or ceil(L / 2) for a model without an entry.")
    tau: float = option(
        6.0, low=0.0, low_open=True, step=0.5,
        help="Temperature multiplying k_M k_M^T + G(k_M) in CRA (paper: 6).")
    eps: float = option(
        0.75, low=0.0, high=2.0, low_open=True, step=0.05,
        help="Cosine-distance radius of the relation term G (paper: 0.75); also G's weight.")
    min_samples: int = option(
        1, low=1,
        help="DBSCAN's min_samples for G, the point itself included. 1 makes clusters the "
             "connected components of the d < eps graph (an open choice of the paper).")
    relation: bool = option(
        True, help="Add the relation term G (CRA). Off gives the kk_middle ablation.")
    dsi_layers: int = option(
        3, low=1,
        help="How many value tensors DSI combines: 1 = v_L alone, 3 = v_L and the two blocks "
             "before it (the paper's l = -3).")
    dsi_mode: str = option(
        "value_mean", choices=DSI_MODES,
        help="Combine DSI's values before attention (value_mean) or average the final "
             "embeddings of each value source (embedding_mean).")
    cls_in_attention: bool = option(
        False, help="Let the class token take part in CRA's attention (an open choice).")
    attn_scale: float | None = option(
        None, low=0.0, low_open=True, none="head_dim ** -0.5",
        help="Scale s of the baselines' self-self attention.")
    naclip_std: float = option(
        5.0, low=0.0, low_open=True, unit="patches",
        help="Standard deviation of NACLIP's Gaussian neighbourhood window.")
    pos_interp: str = option(
        "bilinear", choices=POS_INTERPS,
        help="How positional embeddings are resampled for a window other than the training "
             "size. bilinear (default) is smooth and the engine's own choice; bicubic resamples "
             "to the grid size as TCL does; bicubic_scale uses the scale factor (n + 0.1) / N0 "
             "of DINO's formula, as SCLIP, ClearCLIP and NACLIP do.")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(frozen=True)
class WindowConfig:
    """Resize and sliding-window geometry."""

    short_side: int | None = option(
        None, low=0, unit="px", check=_check_short_side, step=32,
        none="the model's value (448 for the paper's models)",
        help="Resize the image so its short side has this many pixels before windowing. "
             "0 keeps the original size (and lets large images be tiled).")
    crop: int | None = option(
        None, low=0, unit="px", none="the model's value (224 for /16 models)", step=16,
        label="window", check=_check_crop,
        help="Sliding-window size, in resized pixels. 0 runs the whole resized image as one "
             "window, as NACLIP does on Pascal VOC; stride is then not used.")
    stride: int | None = option(
        None, low=1, unit="px", none="the model's value (112 for /16 models)", step=16,
        help="Step between windows, in resized pixels; at most the window size.")
    batch_size: int = option(
        8, low=1, high=4096, unit="windows", label="windows per batch",
        help="Windows per forward pass (and per progress step). Halved automatically when "
             "memory runs out.")
    antialias: bool = option(
        True,
        help="Anti-alias when shrinking the image to short_side (default), so fine detail is "
             "not aliased into the model's input. Off is the plain bilinear resize of mmseg / "
             "OpenCV that SCLIP, ClearCLIP, NACLIP and TCL evaluate with.")
    patch_fit: str = option(
        "resize", choices=PATCH_FITS,
        help="How a window whose side is not a multiple of the patch size is fed to the ViT "
             "(only windows cut short by a small image, or crop 0): resize (default) stretches "
             "it to the next multiple so every pixel is seen; drop leaves the pixels past the "
             "last whole patch out, as the patch convolution of SCLIP and NACLIP does, and "
             "stretches the patch grid's logits over the window.")

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.crop and self.stride is not None and self.stride > self.crop:
            _fail("stride", f"at most crop ({self.crop}) so windows cover the image", self.stride)


@dataclass(frozen=True)
class LabelConfig:
    """From cosine logits to a label image: label 0 is *unlabeled*, class k gets k + 1."""

    logit_scale: float | None = option(
        None, low=0.0, low_open=True, none="the model's value (40)",
        help="Multiplies cosine similarities before the softmax over classes (40; ClearCLIP "
             "uses 50).")
    threshold: float = option(
        0.0, low=0.0, high=1.0, widget="main", label="unlabeled below", step=0.05,
        help="A pixel whose best class scores below this stays unlabeled (0 labels every "
             "pixel). Raise it to leave doubtful pixels for a person.")
    class_thresholds: tuple[tuple[str, float], ...] = option(
        (), widget="hidden",
        help="Per-class overrides of threshold, as NAME=VALUE pairs.")
    prompts: str = option(
        "imagenet80", widget="main", choices=PROMPT_SETS,
        help="Sentences each class name is put into before text encoding: imagenet80 = "
             "CLIP's 80 ImageNet prompts (the paper's), imagenet7 = CLIP's 7 (about 11 times "
             "less text work on a CPU), name = the bare name.")
    synonym_reduce: str = option(
        "max_logit", choices=SYNONYM_REDUCES,
        help="How the synonyms of a class (road; street) make one score. max_logit (default): "
             "the best synonym's cosine on the patch grid, then one softmax over classes, so "
             "probabilities sum to 1. softmax_then_max: every synonym is upsampled and "
             "stitched, the softmax runs over all synonyms and a class takes its best "
             "synonym's probability (SCLIP, ClearCLIP, NACLIP); probabilities then need not "
             "sum to 1.")

    def __post_init__(self) -> None:
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
        validate_fields(self)

    def threshold_for(self, name: str) -> float:
        """Threshold that applies to class ``name`` (its override, else ``threshold``)."""
        return dict(self.class_thresholds).get(name, self.threshold)


@dataclass(frozen=True)
class RefineConfig:
    """PAMR post-processing (Araslanov & Roth 2020)."""

    pamr: bool = option(
        False, widget="main", label="PAMR refinement",
        help="Refine the outlines so they follow the image's edges (PAMR, pixel-adaptive "
             "mask refinement): sharper, slower.")
    pamr_dilations: tuple[int, ...] = option(
        (8, 16), check=_check_dilations, unit="px", low=1, high=MAX_PAMR_DILATION,
        help="Dilations of PAMR's 3x3 neighbourhoods ((8, 16); TCL uses 1 2 4 8 12 24), at "
             f"most {MAX_PAMR_DILATIONS} of them.")
    pamr_iterations: int = option(
        10, low=1, high=MAX_PAMR_ITERATIONS,
        help="PAMR's propagation steps (10 in the paper; each costs one pass over every "
             "neighbour of every pixel and class).")
    pamr_tile: int = option(
        512, low=16, unit="px",
        help="Core tile side of PAMR; each tile is padded by a halo of iterations x the "
             "largest dilation, so tiling does not change the result.")
    pamr_guide: str = option(
        "original", choices=PAMR_GUIDES,
        help="The image whose edges PAMR follows: original (default) is the image itself at "
             "full detail; resized is what the model saw (the resized image), upsampled back "
             "bilinearly, as SCLIP and NACLIP do.")

    def __post_init__(self) -> None:
        dil = self.pamr_dilations
        _check_positive_ints("pamr_dilations", dil)
        object.__setattr__(self, "pamr_dilations", tuple(dil))
        validate_fields(self)


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
    def from_flat(cls, options: Mapping[str, Any] | None = None, **kwargs: Any) -> SegmentConfig:
        """Build a config from flat option names; unknown names are an error."""
        merged = dict(options or {})
        merged.update(kwargs)
        return cls().replace(**merged)

    def replace(self, **options: Any) -> SegmentConfig:
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


def option_specs() -> dict[str, OptionSpec]:
    """Every declared option by flat name, in group order (model, readout, window, labels,
    refine): what the CLI, the docs and the widget are generated from."""
    out: dict[str, OptionSpec] = {}
    for group, cls in _GROUPS.items():
        for spec in _specs_of(cls, group):
            out[spec.name] = spec
    return out
