"""Offline demo: segment a generated scene with the bundled toy CLIP and write PNGs to look at.

``clipseg demo -o OUT_DIR`` (and :func:`run_demo`) needs no download: the scene comes from
:mod:`clipseg.apps.synthetic` and the model is the ``clipseg-demo-tiny`` CLIP shipped inside the
package (:mod:`clipseg.models.bundled`), loaded through the normal registry and loading path and
run through the full :class:`clipseg.pipeline.Segmenter` (text prompts, sliding windows,
stitching, labels, PAMR). The scene has exact ground truth, so the run also reports its mIoU.

The toy model knows 12 coloured shapes and 3 grey textures; its scores say nothing about real
images (docs/demo-model.md).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import READOUTS, ModelConfig, ReadoutConfig, RefineConfig, SegmentConfig, WindowConfig
from ..errors import InvalidInputError
from ..formats.io import class_colors, hex_to_rgb, write_labels
from ..models.bundled import BUNDLED_ARCH
from ..pipeline import Segmenter
from .synthetic import CLASS_NAMES, Scene, make_scene, miou

#: Demo and test scenes use integer seeds from here on; training draws its scenes from
#: ``default_rng([train_seed, step])`` streams, which never equal these.
HELD_OUT_SEED = 1_000_000
_ZOOM = 3  # overlay panels are enlarged so the 8-pixel patches are visible


def demo_config(method: str = "clipseg", *, pamr: bool = True, device: str = "auto"
                ) -> SegmentConfig:
    """The configuration of the demo: bundled model, scenes kept at their drawn size.

    The scenes are drawn at the pixel scale the model was trained at, so ``short_side=0``
    (no resize); windows, stride, middle layer and logit scale come from the registry entry.
    """
    return SegmentConfig(model=ModelConfig(model=BUNDLED_ARCH, device=device),
                         readout=ReadoutConfig(method=method),
                         window=WindowConfig(short_side=0),
                         refine=RefineConfig(pamr=pamr, pamr_dilations=(1, 2)))


def segment_scene(segmenter: Segmenter, scene: Scene, queries: str = "present"
                  ) -> tuple[np.ndarray, list[str]]:
    """Segment ``scene`` and return labels in the numbering of :data:`CLASS_NAMES`.

    Parameters
    ----------
    segmenter : Segmenter
        Configured segmenter (model and options).
    scene : Scene
        A generated scene.
    queries : {"present", "all"}
        Query the names of the classes in the scene (what a user who types what is in the
        picture does) or all 15 names.

    Returns
    -------
    labels : np.ndarray
        ``(H, W)`` uint8; class ``k`` of :data:`CLASS_NAMES` is ``k + 1``, 0 = unlabeled.
    names : list of str
        The names that were queried, in query order.
    """
    if queries not in ("present", "all"):
        raise InvalidInputError(f"queries: expected 'present' or 'all', got {queries!r}")
    names = list(scene.present) if queries == "present" else list(CLASS_NAMES)
    labels = segmenter.segment(scene.image, names).labels
    lut = np.array([0] + [CLASS_NAMES.index(n) + 1 for n in names], dtype=np.uint8)
    return lut[labels], names


def _blend(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.8
           ) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``image`` (float [0, 1]) mixed with the label colours.

    ``alpha`` is high so a class's colour stays recognisable over any image colour (at 0.55 a
    green label over a red shape read as olive, a colour of no class in the legend).
    """
    painted = colors[labels]  # (H, W, 3) in [0, 1]; row 0 (unlabeled) is black
    mixed = np.where((labels > 0)[..., None], (1 - alpha) * image + alpha * painted, image)
    return (np.clip(mixed, 0, 1) * 255).round().astype(np.uint8)


def write_overlay(path: str | os.PathLike, image: np.ndarray, pred: np.ndarray,
                  truth: np.ndarray | None, class_names: list[str], title: str) -> Path:
    """Write a PNG: input | prediction overlay | ground-truth overlay, with a colour legend.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` float32 in [0, 1].
    pred, truth : np.ndarray
        ``(H, W)`` integer labels (0 = unlabeled, class k -> k + 1); ``truth`` may be None.
    class_names : list of str
        The K class names; the legend lists those present in ``pred`` or ``truth``.
    title : str
        One line written above the panels.
    """
    from PIL import Image, ImageDraw  # Pillow comes with scikit-image, an engine dependency

    colors = np.zeros((len(class_names) + 1, 3), np.float32)
    colors[1:] = np.array([hex_to_rgb(c) for c in class_colors(len(class_names))]) / 255.0
    panels = [(np.clip(image, 0, 1) * 255).round().astype(np.uint8), _blend(image, pred, colors)]
    captions = ["input", "prediction"]
    if truth is not None:
        panels.append(_blend(image, truth, colors))
        captions.append("ground truth")
    height, width = image.shape[0] * _ZOOM, image.shape[1] * _ZOOM
    gap, top, row = 8, 34, 16
    present = sorted(set(np.unique(pred)) | (set(np.unique(truth)) if truth is not None
                                              else set()))
    present = [int(k) for k in present if k > 0]
    per_column = max(1, (height + 2 * row) // row)
    columns = -(-len(present) // per_column) if present else 0
    canvas = Image.new("RGB", (len(panels) * (width + gap) + gap + columns * 150,
                               top + max(height, per_column * row) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 4), title, fill="black")
    for i, (panel, text) in enumerate(zip(panels, captions)):
        x = gap + i * (width + gap)
        big = Image.fromarray(panel).resize((width, height), Image.NEAREST)
        canvas.paste(big, (x, top))
        draw.text((x, top - 14), text, fill="black")
    x0 = len(panels) * (width + gap) + gap
    for j, label in enumerate(present):
        x, y = x0 + (j // per_column) * 150, top + (j % per_column) * row
        rgb = tuple(int(v) for v in (colors[label] * 255).round())
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=rgb, outline="black")
        draw.text((x + 16, y + 1), f"{label} {class_names[label - 1]}", fill="black")
    path = Path(path)
    canvas.save(path)
    return path


def run_demo(out_dir: str | os.PathLike, *, seed: int = 0, method: str = "clipseg",
             size: tuple[int, int] = (96, 128), pamr: bool = True, device: str = "auto",
             queries: str = "present", verbose: bool = True) -> dict[str, Any]:
    """Generate a held-out scene, segment it with the bundled model, write PNGs, score it.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing): ``input.png`` (the scene), ``labels.png``
        with its ``labels.clipseg.json`` sidecar (the label file format of
        :mod:`clipseg.formats.io`),
        ``truth.png`` (ground truth, same format) and ``overlay.png`` (input, prediction and
        ground truth side by side with a legend of class names).
    seed : int
        Scene number; the scene is ``make_scene(HELD_OUT_SEED + seed)``, never a training scene.
    method : str
        Readout, one of :data:`clipseg.config.READOUTS`.
    size : (int, int)
        ``(H, W)`` of the scene in pixels, each >= 16 (the model's windows are 64 px).
    pamr : bool
        Refine the logits with PAMR (dilations 1 and 2, suited to the small scenes).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    queries : {"present", "all"}
        Query the names of the classes in the scene (default, as a user typing what is in the
        picture) or all 15 names (harder: the toy model confuses the textures then).
    verbose : bool
        Print what was done and the mIoU.

    Returns
    -------
    dict
        ``miou`` (float, against the scene's ground truth), ``classes`` (the names
        queried), ``present`` (names in the ground truth), ``files`` (name -> Path), ``model``,
        ``method``, ``seed``, ``size`` ((H, W)) and ``seconds`` (segmentation wall time). The
        label images themselves are in ``files["labels"]`` and ``files["truth"]``.
    """
    if method not in READOUTS:
        raise InvalidInputError(f"method: expected one of {', '.join(READOUTS)}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed: expected an integer >= 0, got {seed!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(HELD_OUT_SEED + int(seed), tuple(size), n_shapes=(3, 6),
                       two_backgrounds=0.6)
    config = demo_config(method, pamr=pamr, device=device)
    names = list(CLASS_NAMES)
    segmenter = Segmenter(config)
    model_name = segmenter.loaded.name  # load first: ``seconds`` times the segmentation only
    start = time.perf_counter()
    labels, queried = segment_scene(segmenter, scene, queries)
    seconds = time.perf_counter() - start
    score = miou(labels, scene.labels, len(names))

    from PIL import Image

    files = {"input": out / "input.png"}
    Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(files["input"])
    files["labels"], files["labels_sidecar"] = write_labels(
        out / "labels.png", labels, names, model=model_name, config=config,
        image_info={"path": str(files["input"])}, extra={"demo": {"seed": int(seed),
                                                                 "miou": score}})
    files["truth"], files["truth_sidecar"] = write_labels(
        out / "truth.png", scene.labels, names, model="ground truth",
        image_info={"path": str(files["input"])})
    title = (f"clipseg demo: bundled toy model {model_name}, readout {method}, "
             f"PAMR {'on' if pamr else 'off'}, seed {seed}: mIoU {score:.3f} vs ground truth")
    files["overlay"] = write_overlay(out / "overlay.png", scene.image, labels,
                                     scene.labels, names, title)
    if verbose:
        print(f"scene {scene.image.shape[1]}x{scene.image.shape[0]} px, seed {seed}: "
              f"{', '.join(scene.present)}")
        print(f"segmented with {model_name} ({method}) in {seconds:.2f} s")
        print(f"queried: {', '.join(queried)}")
        print(f"mIoU against ground truth: {score:.3f} (toy model on toy scenes: says nothing "
              f"about real images)")
        print(f"wrote {', '.join(str(p) for p in files.values())}")
    return {"miou": score, "classes": queried, "present": list(scene.present), "files": files,
            "model": model_name, "method": method, "seed": int(seed),
            "size": tuple(scene.labels.shape), "seconds": seconds}


def held_out_scenes(count: int, size: tuple[int, int] = (96, 128), *, start: int = 0) -> list:
    """The held-out evaluation scenes ``make_scene(HELD_OUT_SEED + start + i)``, i < count."""
    return [make_scene(HELD_OUT_SEED + start + i, tuple(size), n_shapes=(3, 6),
                       two_backgrounds=0.6) for i in range(count)]


def score_readouts(methods: tuple[str, ...] = ("clipseg", "maskclip", "clearclip", "sclip",
                                               "naclip"),
                   *, scenes: int = 40, size: tuple[int, int] = (96, 128),
                   pamr: tuple[bool, ...] = (False, True), model: Any = None,
                   device: str = "cpu", queries: str = "present"
                   ) -> dict[tuple[str, bool], float]:
    """Dataset-level mIoU of each readout on the held-out scenes (the docs' table).

    Parameters
    ----------
    methods : tuple of str
        Readouts to score.
    scenes : int
        Number of held-out scenes (``held_out_scenes(scenes, size)``).
    pamr : tuple of bool
        Score without and/or with PAMR.
    model : LoadedModel, open_clip module or None
        None: the bundled model loaded from its shipped weights; pass a randomly initialised
        module of the same architecture for the baseline row.
    device : str
        Where to run.
    queries : {"present", "all"}
        Names queried per scene (:func:`segment_scene`).

    Returns
    -------
    dict
        ``(method, pamr) -> mIoU`` over the 15 classes, confusion accumulated over all scenes.
    """
    data = held_out_scenes(scenes, size)
    truth = np.concatenate([s.labels.ravel() for s in data])
    out: dict[tuple[str, bool], float] = {}
    for method in methods:
        for refine in pamr:
            segmenter = Segmenter(demo_config(method, pamr=refine, device=device), model=model)
            pred = np.concatenate([segment_scene(segmenter, s, queries)[0].ravel()
                                   for s in data])
            out[(method, refine)] = miou(pred, truth, len(CLASS_NAMES))
    return out
