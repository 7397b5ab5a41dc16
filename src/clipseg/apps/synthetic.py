"""Synthetic scenes with captions and per-pixel ground truth (numpy only).

A scene is one or two grey textured backgrounds (``stripes``, ``checkerboard``, ``dots``) with a
few flat-coloured shapes (``red circle``, ``blue square``, ...) painted on top. The generator is
deterministic given a seed, so the bundled demo model (:mod:`clipseg.models.bundled`) can be
trained on it (``scripts/train_tiny_clip.py``) and evaluated on held-out seeds with exact ground
truth (``tests/core/test_end_to_end.py``, :func:`clipseg.apps.demo.run_demo`).

Seeds: training draws scenes from ``np.random.default_rng([train_seed, step])``; held-out scenes
(tests, demo) use integer seeds from 1_000_000 on. numpy pads seed words with zeros, so
``default_rng(0)`` equals ``default_rng([0, 0])``: never use small integers for held-out sets.

Class ``k`` of :data:`CLASS_NAMES` has label ``k + 1`` in :attr:`Scene.labels` (the engine's
convention: label 0 = unlabeled; every pixel of a scene has a class, so 0 never occurs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

#: Shape colours, RGB in [0, 1]. Each scene jitters them a little.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.12, 0.70, 0.18),
    "blue": (0.14, 0.30, 0.92),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: tuple[str, ...] = ("stripes", "checkerboard", "dots")

#: Every class a scene can contain: the 12 coloured shapes, then the 3 backgrounds.
SHAPE_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
CLASS_NAMES: tuple[str, ...] = SHAPE_CLASSES + BACKGROUNDS


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W, 3)`` float32 RGB in [0, 1].
    labels : np.ndarray
        ``(H, W)`` uint8 ground truth; class ``k`` of :data:`CLASS_NAMES` has label ``k + 1``.
    shapes : tuple of str
        Names of the painted shapes, in painting order (a later shape may cover an earlier one).
    backgrounds : tuple of str
        Names of the background textures (one or two).
    """

    image: np.ndarray
    labels: np.ndarray
    shapes: tuple[str, ...]
    backgrounds: tuple[str, ...]

    @property
    def present(self) -> tuple[str, ...]:
        """Class names with at least one pixel in :attr:`labels`, in :data:`CLASS_NAMES` order."""
        ids = np.unique(self.labels)
        return tuple(CLASS_NAMES[i - 1] for i in ids if i > 0)


def _texture(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A grey texture ``(H, W)`` float32 in [0, 1] with random phase, period and contrast."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0.35, 0.65)
    amp = rng.uniform(0.18, 0.3)
    if name == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5.0, 8.0)
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.uniform(0, 1)
        pattern = np.where((t % 1.0) < 0.5, 1.0, -1.0)
    elif name == "checkerboard":
        cell = rng.uniform(3.0, 5.0)
        oy, ox = rng.uniform(0, 2 * cell, size=2)
        pattern = np.where(((np.floor((yy + oy) / cell) + np.floor((xx + ox) / cell)) % 2) == 0,
                           1.0, -1.0)
    elif name == "dots":
        spacing = rng.uniform(6.0, 9.0)
        radius = spacing * rng.uniform(0.2, 0.3)
        oy, ox = rng.uniform(0, spacing, size=2)
        dy = (yy + oy) % spacing - spacing / 2
        dx = (xx + ox) % spacing - spacing / 2
        pattern = np.where(dy * dy + dx * dx < radius * radius, -1.0, 0.35)
    else:
        raise InvalidInputError(f"background: expected one of {', '.join(BACKGROUNDS)}, "
                                f"got {name!r}")
    return (base + amp * pattern).astype(np.float32)


def _shape_mask(shape: str, height: int, width: int, cy: float, cx: float, radius: float,
                angle: float) -> np.ndarray:
    """Boolean mask ``(H, W)`` of one shape centred at (cy, cx) of circumradius ``radius``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    # rotate the coordinates into the shape's frame
    ry = np.cos(angle) * dy - np.sin(angle) * dx
    rx = np.sin(angle) * dy + np.cos(angle) * dx
    if shape == "circle":
        return ry * ry + rx * rx <= radius * radius
    if shape == "square":
        half = radius / np.sqrt(2.0)
        return (np.abs(ry) <= half) & (np.abs(rx) <= half)
    if shape == "triangle":
        inside = np.ones((height, width), dtype=bool)
        for k in range(3):  # three half-planes, edges at distance radius / 2 from the centre
            theta = angle + 2 * np.pi * k / 3
            inside &= (np.cos(theta) * dy + np.sin(theta) * dx) <= radius / 2
        return inside
    raise InvalidInputError(f"shape: expected one of {', '.join(SHAPES)}, got {shape!r}")


def make_scene(seed: int | np.random.Generator, size: tuple[int, int] = (64, 64), *,
               n_shapes: tuple[int, int] = (1, 3), radius: tuple[float, float] = (9.0, 18.0),
               two_backgrounds: float = 0.3, noise: float = 0.03) -> Scene:
    """Generate one scene, deterministically from ``seed``.

    Parameters
    ----------
    seed : int or np.random.Generator
        The same integer always gives the same scene.
    size : (int, int)
        ``(H, W)`` in pixels, each >= 16.
    n_shapes : (int, int)
        Inclusive range of the number of shapes painted.
    radius : (float, float)
        Range of the shapes' circumradius in pixels.
    two_backgrounds : float
        Probability that the background is split by a random line into two textures.
    noise : float
        Standard deviation of the per-pixel Gaussian noise added to the image.

    Returns
    -------
    Scene
        ``image`` (H, W, 3) float32 in [0, 1] and ``labels`` (H, W) uint8.
    """
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s >= 16 for s in size)):
        raise InvalidInputError(f"size: expected (H, W) integers >= 16, got {size!r}")
    lo, hi = n_shapes
    if not (0 <= lo <= hi):
        raise InvalidInputError(f"n_shapes: expected (low, high) with 0 <= low <= high, "
                                f"got {n_shapes!r}")
    if not (0 < radius[0] <= radius[1]):
        raise InvalidInputError(f"radius: expected (low, high) with 0 < low <= high, "
                                f"got {radius!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    height, width = int(size[0]), int(size[1])

    bg_ids = [int(rng.integers(len(BACKGROUNDS)))]
    labels = np.full((height, width), len(SHAPE_CLASSES) + bg_ids[0] + 1, dtype=np.uint8)
    gray = _texture(BACKGROUNDS[bg_ids[0]], height, width, rng)
    if rng.random() < two_backgrounds:
        other = int(rng.choice([i for i in range(len(BACKGROUNDS)) if i != bg_ids[0]]))
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        side = (np.cos(angle) * (yy - cy) + np.sin(angle) * (xx - cx)) > 0
        gray = np.where(side, _texture(BACKGROUNDS[other], height, width, rng), gray)
        labels[side] = len(SHAPE_CLASSES) + other + 1
        if side.any() and (~side).any():
            bg_ids.append(other)
    tint = rng.uniform(-0.04, 0.04, size=3).astype(np.float32)
    image = np.clip(gray[..., None] + tint, 0, 1).astype(np.float32)

    shapes: list[str] = []
    for _ in range(int(rng.integers(lo, hi + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        color_name, shape = SHAPE_CLASSES[cls].split(" ")
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        mask = _shape_mask(shape, height, width, cy, cx, r, rng.uniform(0, 2 * np.pi))
        if not mask.any():
            continue
        color = np.clip(np.asarray(COLORS[color_name], np.float32)
                        + rng.uniform(-0.08, 0.08, size=3).astype(np.float32), 0, 1)
        image[mask] = color * rng.uniform(0.85, 1.0)
        labels[mask] = cls + 1
        shapes.append(SHAPE_CLASSES[cls])
    image = image + rng.normal(0, noise, size=image.shape).astype(np.float32)
    image = np.clip(image, 0, 1).astype(np.float32)
    backgrounds = tuple(BACKGROUNDS[i] for i in bg_ids)
    return Scene(image=image, labels=labels, shapes=tuple(shapes), backgrounds=backgrounds)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A composed caption naming what is visible, e.g. ``"a red circle and a blue square on
    stripes"``; names come in random order so the text tower cannot rely on position."""
    visible = [n for n in scene.present if n in SHAPE_CLASSES]
    visible = [visible[i] for i in rng.permutation(len(visible))]
    bgs = [n for n in scene.present if n in BACKGROUNDS]
    bgs = [bgs[i] for i in rng.permutation(len(bgs))]
    ground = " and ".join(bgs)
    if not visible:
        return ground
    return " and ".join(f"a {n}" for n in visible) + f" on {ground}"


def make_batch(seed: int, count: int, size: tuple[int, int] = (64, 64),
               **scene_options: object) -> list[Scene]:
    """``count`` scenes drawn from one generator seeded with ``seed`` (deterministic)."""
    if not isinstance(count, int) or count < 1:
        raise InvalidInputError(f"count: expected a positive integer, got {count!r}")
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size, **scene_options) for _ in range(count)]


def miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean intersection-over-union over the classes present in ``truth`` or ``pred``.

    Parameters
    ----------
    pred, truth : np.ndarray
        Integer label images of the same shape; labels ``1..num_classes`` are classes, 0 in
        ``pred`` (unlabeled) counts as a miss, 0 in ``truth`` is ignored.
    num_classes : int
        Number of classes K.

    Returns
    -------
    float
        Mean IoU over classes with a non-empty union (ignoring truth == 0 pixels).
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise InvalidInputError(f"pred and truth: expected the same shape, got {pred.shape} "
                                f"and {truth.shape}")
    valid = truth > 0
    p = pred[valid].astype(np.int64)
    t = truth[valid].astype(np.int64)
    conf = np.bincount(t * (num_classes + 1) + p,
                       minlength=(num_classes + 1) ** 2).reshape(num_classes + 1, -1)
    inter = np.diag(conf)[1:].astype(np.float64)
    union = conf[1:, :].sum(1) + conf[:, 1:].sum(0) - np.diag(conf)[1:]
    keep = union > 0
    if not keep.any():
        raise InvalidInputError("pred and truth: no labelled pixel to score")
    return float((inter[keep] / union[keep]).mean())
