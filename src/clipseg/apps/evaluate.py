"""``clipseg evaluate``: mIoU on the paper's benchmarks under the peers' published protocols.

A *protocol* is a named set of settings (:data:`PROTOCOLS`): flat
:class:`~clipseg.config.SegmentConfig` options (readout, short side, window, logit scale,
threshold, PAMR) plus the class-name variant and whether datasets with a background class get a
background prompt. Some settings differ per dataset (the peers resize Cityscapes to 560 px and
threshold background only where there is one). Every field can be overridden; the order is
protocol defaults < protocol's per-dataset values < the caller's overrides.

Scores follow mmsegmentation's ``IoUMetric`` (:mod:`clipseg.apps.metrics`): areas summed over the
dataset, ignore index 255, classes absent from both prediction and ground truth left out of the
mean. The engine's label 0 ("under the threshold") counts as background on datasets that have
one and as "no class" (a miss) elsewhere.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SegmentConfig
from ..errors import InvalidConfigError, InvalidInputError, describe
from .datasets import (
    DATASETS,
    NAME_VARIANTS,
    SegmentationDataset,
    class_names,
    engine_to_dataset_lut,
    open_dataset,
    prompt_classes,
)
from .metrics import ConfusionAccumulator

__all__ = ["Protocol", "PROTOCOLS", "EvalSettings", "EvalReport", "resolve_settings",
           "evaluate", "table1_markdown", "per_class_markdown", "add_subparser"]

_BG = ("voc21", "context60", "coco_object")
#: Columns of the paper's Table 1, in its order (V21 is appended when evaluated).
TABLE1_COLUMNS = ("C60", "COCO", "V20", "CITY", "STUFF", "A150", "A847", "C59", "C459")
_EXTRA_KEYS = ("names", "background_prompt", "area_threshold")


@dataclass(frozen=True)
class Protocol:
    """Settings of one published evaluation protocol.

    Attributes
    ----------
    name, description : str
    options : dict
        Flat SegmentConfig options plus ``names`` (a :data:`~clipseg.apps.datasets.NAME_VARIANTS`
        value) and ``background_prompt`` (bool), for every dataset.
    per_dataset : dict of dataset key -> dict
        Values that replace ``options`` for one dataset.
    """

    name: str
    description: str
    options: Mapping[str, Any]
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _bg(**values: Any) -> dict[str, dict[str, Any]]:
    return {key: dict(values) for key in _BG}


#: What SCLIP, ClearCLIP and NACLIP share, read from their ``clip_segmentor.py`` /
#: ``clearclip_segmentor.py`` / ``naclip.py``, their CLIP towers' ``interpolate_pos_encoding``
#: and their configs: mmseg's ``Resize`` (OpenCV bilinear, no anti-aliasing), positional
#: embeddings by DINO's bicubic scale-factor formula, the softmax over every synonym before the
#: per-class max, 80 ImageNet prompts.
_PEERS: dict[str, Any] = {"pos_interp": "bicubic_scale", "antialias": False,
                          "synonym_reduce": "softmax_then_max", "prompts": "imagenet80",
                          "threshold": 0.0, "background_prompt": True}
#: TCL's ``segmentation/configs/_base_/datasets/*.py``: short side 448 (mmseg ``Resize``,
#: ``img_scale=(2048, 448)``), ``slide`` with crop 448 and stride 224.
_TCL_GEOMETRY: dict[str, Any] = {"short_side": 448, "crop": 448, "stride": 224,
                                 "antialias": False}

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("paper", "CLIPSeg, Table 1, as the paper states it: TCL's protocol (short side "
             "448, 448/224 windows, no anti-aliasing) and PAMR as SCLIP applies it (dilations "
             "8, 16; guided by the resized image). Not stated by the paper, so open choices: "
             "logit scale (the registry's 40), bilinear positional embeddings, plain names; on "
             "background datasets SCLIP's names, its synonym softmax and threshold 0.1",
             {"method": "clipseg", **_TCL_GEOMETRY, "logit_scale": None, "threshold": 0.0,
              "pamr": True, "pamr_dilations": (8, 16), "pamr_iterations": 10,
              "pamr_guide": "resized", "pos_interp": "bilinear",
              "synonym_reduce": "max_logit", "names": "plain", "background_prompt": True},
             _bg(names="sclip", threshold=0.1, synonym_reduce="softmax_then_max")),
    Protocol("tcl", "TCL's evaluation (configs/eval.yml, segmentation/configs): short side "
             "448, 448/224 windows, no anti-aliasing, bicubic positional embeddings (TCL's "
             "interpolate_pos_emb), PAMR dilations 1, 2, 4, 8, 12, 24 for 10 steps, no "
             "background prompt, background below probability 0.4; the readout is CLIPSeg's",
             {"method": "clipseg", **_TCL_GEOMETRY, "logit_scale": None, "threshold": 0.0,
              "pamr": True, "pamr_dilations": (1, 2, 4, 8, 12, 24), "pamr_iterations": 10,
              "pamr_guide": "original", "pos_interp": "bicubic",
              "synonym_reduce": "max_logit", "names": "plain", "background_prompt": False},
             _bg(threshold=0.4)),
    Protocol("sclip", "SCLIP's configs/cfg_*.py and clip_segmentor.py: short side 336 "
             "(COCO-Stuff 448, Cityscapes 560), 224/112 windows, logit scale 40 (VOC21 65, C60 "
             "and COCO-Object 50), threshold 0.1 and SCLIP's background words on background "
             "datasets, VOC21 area threshold 0.1, no PAMR, SCLIP's names",
             {**_PEERS, "method": "sclip", "short_side": 336, "crop": 224, "stride": 112,
              "logit_scale": 40.0, "pamr": False, "pamr_dilations": (8, 16),
              "pamr_guide": "resized", "patch_fit": "drop", "names": "sclip"},
             {"coco_stuff": {"short_side": 448}, "cityscapes": {"short_side": 560},
              "voc21": {"logit_scale": 65.0, "threshold": 0.1, "area_threshold": 0.1},
              "context60": {"logit_scale": 50.0, "threshold": 0.1},
              "coco_object": {"logit_scale": 50.0, "threshold": 0.1}}),
    Protocol("clearclip", "ClearCLIP's configs/cfg_*.py and clearclip_segmentor.py: short side "
             "448, 448/224 windows (Cityscapes 224/224), logit scale 50, no PAMR, ClearCLIP's "
             "names (SCLIP's words without synonyms on VOC, a plain background); thresholds "
             "VOC21 0.5, C60 0.15, COCO-Object 0.4",
             {**_PEERS, "method": "clearclip", "short_side": 448, "crop": 448, "stride": 224,
              "logit_scale": 50.0, "pamr": False, "names": "clearclip"},
             {"cityscapes": {"crop": 224, "stride": 224},
              "voc21": {"threshold": 0.5}, "context60": {"threshold": 0.15},
              "coco_object": {"threshold": 0.4}}),
    Protocol("naclip", "NACLIP's configs/cfg_*.py and naclip.py: short side 336 (Cityscapes "
             "560), 224/112 windows except VOC20 and VOC21 (slide_crop=0: the whole image), "
             "logit scale 40, threshold 0.1 on background datasets, SCLIP's names, PAMR on "
             "(10 steps, dilations 8, 16, guided by the resized image: its default and its "
             "README's main results; --no-pamr for the paper's rows without it)",
             {**_PEERS, "method": "naclip", "naclip_std": 5.0, "short_side": 336, "crop": 224,
              "stride": 112, "logit_scale": 40.0, "pamr": True, "pamr_dilations": (8, 16),
              "pamr_iterations": 10, "pamr_guide": "resized", "patch_fit": "drop",
              "names": "sclip"},
             {"cityscapes": {"short_side": 560},
              "voc20": {"crop": 0}, "voc21": {"crop": 0, "threshold": 0.1},
              "context60": {"threshold": 0.1}, "coco_object": {"threshold": 0.1}}),
)}


@dataclass(frozen=True)
class EvalSettings:
    """Everything one dataset's evaluation depends on.

    Attributes
    ----------
    config : SegmentConfig
    names : str
        Class-name variant (``plain`` / ``sclip`` / ``clearclip``).
    background_prompt : bool
        Prompt the background line on datasets that have a background class.
    area_threshold : float or None
        SCLIP's ``area_thd`` (its VOC21 config): per image, a non-background class whose
        predicted area is at most this fraction of all non-background pixels loses its
        probability (set to 0) before the labels and the threshold are taken. Needs the
        background prompt. None: off.
    protocol : str
        Name of the protocol the settings started from (``"custom"`` when none).
    """

    config: SegmentConfig
    names: str = "plain"
    background_prompt: bool = True
    area_threshold: float | None = None
    protocol: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.config, SegmentConfig):
            raise InvalidConfigError(f"config: expected a SegmentConfig, got "
                                     f"{describe(self.config)}")
        if self.names not in NAME_VARIANTS:
            raise InvalidConfigError(f"names: expected one of {', '.join(NAME_VARIANTS)}, got "
                                     f"{self.names!r}")
        if not isinstance(self.background_prompt, bool):
            raise InvalidConfigError(f"background_prompt: expected True or False, got "
                                     f"{self.background_prompt!r}")
        a = self.area_threshold
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float))
                              or not 0.0 <= a < 1.0):
            raise InvalidConfigError(f"area_threshold: expected a fraction in [0, 1) or None, "
                                     f"got {a!r}")


def area_filtered_labels(probs: np.ndarray, thresholds: np.ndarray, area_threshold: float
                         ) -> np.ndarray:
    """Engine labels after SCLIP's area threshold (``clip_segmentor.py``, ``area_thd``).

    Parameters
    ----------
    probs : numpy.ndarray
        ``(K, H, W)`` class probabilities; class 0 is the background prompt.
    thresholds : numpy.ndarray
        ``(K,)`` probability threshold of each class (SCLIP's ``prob_thd``).
    area_threshold : float
        A class ``k >= 1`` keeps its probabilities only where its arg-max area exceeds
        ``area_threshold`` times the arg-max area of all classes ``>= 1``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int64 engine labels: ``k + 1`` for class ``k``, 0 where the winning
        (filtered) probability is below its class's threshold.
    """
    k = probs.shape[0]
    area = np.bincount(probs.argmax(axis=0).ravel(), minlength=k)[1:]
    keep = np.concatenate([[True], area > area_threshold * area.sum()])
    filtered = probs * keep[:, None, None].astype(probs.dtype)
    arg = filtered.argmax(axis=0)
    top = np.take_along_axis(filtered, arg[None], axis=0)[0]
    return np.where(top >= thresholds[arg], arg + 1, 0)


def resolve_settings(protocol: str, dataset: str, overrides: Mapping[str, Any] | None = None,
                     base: SegmentConfig | None = None) -> EvalSettings:
    """Settings of ``protocol`` for ``dataset`` with ``overrides`` applied last.

    Parameters
    ----------
    protocol : str
        A key of :data:`PROTOCOLS`.
    dataset : str
        A key of :data:`~clipseg.apps.datasets.DATASETS`.
    overrides : mapping or None
        Flat SegmentConfig options, ``names``, ``background_prompt``.
    base : SegmentConfig or None
        Starting config (model, device, ...) before the protocol's values.
    """
    if protocol not in PROTOCOLS:
        raise InvalidConfigError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got "
                                 f"{protocol!r}")
    if dataset not in DATASETS:
        raise InvalidConfigError(f"dataset: expected one of {', '.join(DATASETS)}, got "
                                 f"{dataset!r}")
    spec = PROTOCOLS[protocol]
    merged = {**spec.options, **spec.per_dataset.get(dataset, {}), **dict(overrides or {})}
    extra = {k: merged.pop(k) for k in _EXTRA_KEYS if k in merged}
    if "area_threshold" in extra and extra["area_threshold"] is not None:
        extra["area_threshold"] = float(extra["area_threshold"])
    config = (base or SegmentConfig()).replace(**merged)
    return EvalSettings(config=config, protocol=protocol, **extra)


@dataclass
class EvalReport:
    """Scores of one model on one dataset.

    ``per_class_iou`` and ``miou`` are fractions in [0, 1] (``None`` in JSON for a class absent
    from prediction and ground truth); ``confusion`` is the ``(N, N + 1)`` matrix of
    :func:`clipseg.apps.metrics.confusion_matrix` (rows ground truth, last column "no class").
    """

    dataset: str
    column: str
    title: str
    model: str
    method: str
    protocol: str
    names: str
    background_prompt: bool
    num_images: int
    miou: float
    pixel_accuracy: float
    class_names: list[str]
    per_class_iou: list[float]
    seconds: float
    images_per_second: float
    config: dict[str, Any]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nan -> None)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v
        out = asdict(self)
        out["miou"] = clean(self.miou)
        out["pixel_accuracy"] = clean(self.pixel_accuracy)
        out["per_class_iou"] = {n: clean(v) for n, v in zip(self.class_names, self.per_class_iou)}
        return out


def evaluate(dataset: SegmentationDataset, config: EvalSettings | SegmentConfig | None = None,
             *, model: Any = None, limit: int | None = None, progress: bool = False
             ) -> EvalReport:
    """Segment every image of ``dataset`` and score it against its ground truth.

    Parameters
    ----------
    dataset : SegmentationDataset
        From :func:`clipseg.apps.datasets.open_dataset`.
    config : EvalSettings, SegmentConfig or None
        A SegmentConfig is used with plain names and a background prompt; None = the ``paper``
        protocol for this dataset.
    model : LoadedModel, open_clip CLIP module, Segmenter or None
        Shared across calls to avoid reloading; None loads ``config.model``. A
        :class:`~clipseg.pipeline.Segmenter` whose ``config`` equals the settings' config is
        used as is, keeping its text-embedding cache between calls.
    limit : int or None
        Evaluate only the first ``limit`` images.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    EvalReport
        Images/s counts segmentation time only (file reading excluded).
    """
    from ..labels import class_threshold_vector
    from ..pipeline import Segmenter

    if not isinstance(dataset, SegmentationDataset):
        raise InvalidInputError(f"dataset: expected a SegmentationDataset (open_dataset), got "
                                f"{describe(dataset)}")
    key = dataset.spec.key
    if config is None:
        settings = resolve_settings("paper", key)
    elif isinstance(config, SegmentConfig):
        settings = EvalSettings(config=config)
    elif isinstance(config, EvalSettings):
        settings = config
    else:
        raise InvalidConfigError(f"config: expected EvalSettings, SegmentConfig or None, got "
                                 f"{describe(config)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidConfigError(f"limit: expected a positive integer or None, got {limit!r}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    names, ids = prompt_classes(key, settings.names, settings.background_prompt)
    lut = engine_to_dataset_lut(ids, dataset.spec)
    if settings.area_threshold is not None and not (dataset.spec.background
                                                    and settings.background_prompt):
        raise InvalidConfigError(f"area_threshold: expected a dataset with a prompted "
                                 f"background class (it spares the background), got {key} "
                                 f"with background_prompt={settings.background_prompt}")
    if isinstance(model, Segmenter):
        if model.config != settings.config:
            raise InvalidConfigError("model: expected a Segmenter built with the evaluation's "
                                     "config, got one with a different config; pass its "
                                     "LoadedModel instead")
        segmenter = model
    else:
        segmenter = Segmenter(settings.config, model=model)
    acc = ConfusionAccumulator(dataset.spec.num_classes)
    indices: Any = range(count)
    if progress:
        from tqdm.auto import tqdm
        indices = tqdm(indices, desc=f"{key} ({settings.protocol})", unit="img",
                       file=sys.stderr)
    seconds = 0.0
    for i in indices:
        image, gt = dataset[i]
        start = time.perf_counter()
        result = segmenter.segment(image, names)
        labels = result.labels.astype(np.int64)
        if settings.area_threshold is not None:
            labels = area_filtered_labels(result.probs, class_threshold_vector(
                result.class_names, result.config.labels), settings.area_threshold)
        seconds += time.perf_counter() - start
        if labels.shape != gt.shape:
            raise InvalidInputError(f"{dataset.names[i]}: expected labels of the ground truth's "
                                    f"shape {gt.shape}, got {labels.shape}")
        acc.update(lut[labels], gt)
    scores = acc.scores()
    resolved = segmenter.resolved_config
    return EvalReport(
        dataset=key, column=dataset.spec.column, title=dataset.spec.title,
        model=segmenter.loaded.name, method=resolved.readout.method,
        protocol=settings.protocol, names=settings.names,
        background_prompt=settings.background_prompt, num_images=count,
        miou=scores.miou, pixel_accuracy=scores.pixel_accuracy,
        class_names=[n.split(";")[0].strip() for n in class_names(key, "plain")],
        per_class_iou=[float(v) for v in scores.iou], seconds=seconds,
        images_per_second=count / seconds if seconds > 0 else float("nan"),
        config=resolved.to_flat(), confusion=acc.matrix.tolist())


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def table1_markdown(reports: Sequence[EvalReport]) -> str:
    """Markdown table laid out like the paper's Table 1: one row per (method, model), mIoU %.

    Columns the run did not cover show ``-``; ``Avg.`` is the mean over the columns present
    in that row (the paper averages all nine).
    """
    columns = list(TABLE1_COLUMNS)
    if any(r.column not in columns for r in reports):
        columns += sorted({r.column for r in reports} - set(columns))
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for r in reports:
        rows.setdefault((r.method, r.model), {})[r.column] = r.miou
    lines = ["| Methods | VLM | " + " | ".join(columns) + " | Avg. |",
             "|---|---|" + "---:|" * (len(columns) + 1)]
    for (method, model), values in rows.items():
        present = [v for v in values.values() if not math.isnan(v)]
        avg = sum(present) / len(present) if present else float("nan")
        cells = [_pct(values.get(c)) for c in columns]
        lines.append(f"| {method} | {model} | " + " | ".join(cells) + f" | {_pct(avg)} |")
    return "\n".join(lines) + "\n"


def per_class_markdown(report: EvalReport) -> str:
    """Per-class IoU table (%) of one report, plus its summary line."""
    lines = [f"### {report.title} — {report.method} on {report.model} ({report.protocol})", "",
             f"mIoU {_pct(report.miou)} %, pixel accuracy {_pct(report.pixel_accuracy)} %, "
             f"{report.num_images} images, {report.images_per_second:.2f} images/s", "",
             "| class | IoU % |", "|---|---:|"]
    lines += [f"| {n} | {_pct(v)} |" for n, v in zip(report.class_names, report.per_class_iou)]
    return "\n".join(lines) + "\n"


def write_outputs(reports: Sequence[EvalReport], folder: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` (Table 1 + per-class tables) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "results.json"
    js.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n", encoding="utf-8")
    md = folder / "results.md"
    md.write_text("## mIoU (%)\n\n" + table1_markdown(reports) + "\n"
                  + "\n".join(per_class_markdown(r) for r in reports), encoding="utf-8")
    return js, md


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _data_arg(text: str) -> tuple[str, str]:
    key, sep, root = text.partition("=")
    if not sep or key not in DATASETS or not root:
        raise argparse.ArgumentTypeError(
            f"expected KEY=ROOT with KEY one of {', '.join(DATASETS)}, got {text!r}")
    return key, root


def add_subparser(subparsers: Any) -> None:
    """Register ``clipseg evaluate`` on the ``clipseg`` command's subparsers."""
    from .cliopts import add_config_arguments

    p = subparsers.add_parser(
        "evaluate", help="mIoU on the paper's benchmarks (Pascal VOC/Context, COCO, ADE, City)",
        description="Evaluate on benchmark datasets under a published protocol. Every "
        "protocol value can be overridden with the option flags below.")
    p.add_argument("--data", type=_data_arg, action="append", required=True,
                   metavar="KEY=ROOT", help="dataset key and folder, repeatable; keys: "
                   + ", ".join(DATASETS))
    p.add_argument("--protocol", "--preset", dest="protocol", default="paper",
                   choices=sorted(PROTOCOLS), help="settings preset (default: paper)")
    p.add_argument("--names", choices=NAME_VARIANTS, default=argparse.SUPPRESS,
                   help="class-name variant (default: the protocol's)")
    p.add_argument("--background-prompt", action=argparse.BooleanOptionalAction,
                   default=argparse.SUPPRESS, help="prompt a background class on V21/C60/COCO")
    p.add_argument("--area-threshold", type=float, default=argparse.SUPPRESS, metavar="F",
                   help="SCLIP's per-image area threshold of non-background classes (default: "
                        "the protocol's; the sclip protocol uses 0.1 on VOC21)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N images only")
    p.add_argument("-o", "--output", type=Path, default=Path("clipseg-eval"),
                   help="folder for results.json and results.md (default: ./clipseg-eval)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..models import load_model
    from .cliopts import config_overrides

    overrides = config_overrides(args)
    for key in _EXTRA_KEYS:
        if key in vars(args):
            overrides[key] = getattr(args, key)
    if args.limit is not None and args.limit < 1:
        raise InvalidConfigError(f"--limit: expected a positive integer, got {args.limit}")
    plans = [(open_dataset(key, root, args.split),
              resolve_settings(args.protocol, key, overrides)) for key, root in args.data]
    model = load_model(plans[0][1].config.model)
    reports = []
    for dataset, settings in plans:
        reports.append(evaluate(dataset, settings, model=model, limit=args.limit,
                                progress=not args.quiet))
    js, md = write_outputs(reports, args.output)
    print(table1_markdown(reports))
    print(f"wrote {js} and {md}", file=sys.stderr)
    return 0
