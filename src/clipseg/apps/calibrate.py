"""``clipseg calibrate``: pick CRA's middle layer M on your own labelled images.

The paper chooses M with an intra-image *coherence* metric (METHOD.md): for one image and one
layer, L2-normalise the per-patch keys, ``S = k k^T``, and use ``S`` to predict whether two
random patches carry the same ground-truth class; the metric is the AUROC of that prediction,
averaged over images. The layer whose keys score highest is M. Queries, values and block
outputs are measured the same way for comparison.

Here each image goes through the engine's own window preparation
(:func:`clipseg.windows.plan_windows` and :func:`clipseg.windows.window_pixels`, the functions
inference uses, with options resolved by :func:`clipseg.resolve.resolve_config`): resized to
the short side and cut into non-overlapping windows of the crop size, an edge window fed as
inference feeds it (``patch_fit``); each window counts as one image. The mask follows the same
geometry (nearest neighbour). A patch takes the majority label of its pixels; patches whose
majority is an ignored label (default 0 = unlabeled, napari's convention) are left out. The
same random pairs are used for every layer and feature kind of a window.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig, SegmentConfig
from ..errors import InvalidConfigError, InvalidInputError, describe
from ..image import as_rgb01
from ..models.registry import ModelEntry
from ..resolve import resolve_config
from ..windows import fed_size, plan_windows, window_pixels
from .calibrate_kinds import KINDS
from .metrics import auroc

__all__ = ["KINDS", "CalibrationReport", "calibrate", "coherence_auroc", "sample_pairs",
           "patch_labels"]



def sample_pairs(n: int, pairs: int | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i != j``, among ``n`` patches.

    All ``n (n - 1) / 2`` unordered pairs when that is at most ``pairs`` (or ``pairs`` is
    None), else ``pairs`` pairs drawn uniformly with replacement.

    Returns
    -------
    i, j : numpy.ndarray
        ``(M,)`` int64 each.
    """
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if pairs is None or n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    i = rng.integers(0, n, size=pairs)
    j = rng.integers(0, n - 1, size=pairs)
    j = j + (j >= i)  # uniform over the n - 1 other patches
    return i.astype(np.int64), j.astype(np.int64)


def coherence_auroc(features: np.ndarray | torch.Tensor, labels: np.ndarray,
                    i: np.ndarray, j: np.ndarray) -> float:
    """AUROC of cosine similarity predicting "same label" over the patch pairs ``(i, j)``.

    Parameters
    ----------
    features : numpy.ndarray or torch.Tensor
        ``(P, C)`` per-patch features (L2-normalised here).
    labels : numpy.ndarray
        ``(P,)`` integer patch labels.
    i, j : numpy.ndarray
        ``(M,)`` pair indices into the P patches (:func:`sample_pairs`).

    Returns
    -------
    float
        In [0, 1]; ``nan`` when the pairs are all same-label or all different-label.
    """
    f = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != len(labels):
        raise InvalidInputError(f"features: expected (P, C) with P = {len(labels)} labels, got "
                                f"{describe(f)}")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    similarity = np.einsum("mc,mc->m", f[i], f[j])
    return auroc(similarity, labels[i] == labels[j])


def nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resampled to ``size`` by nearest neighbour at pixel centres (labels stay labels).

    Output pixel ``(r, c)`` takes input ``(floor((r + 0.5) H / h), floor((c + 0.5) W / w))``.
    """
    h, w = (int(v) for v in size)
    if tuple(mask.shape) == (h, w):
        return mask
    rows = np.minimum(((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int), mask.shape[1] - 1)
    return mask[rows][:, cols]


def patch_labels(mask: np.ndarray, grid: tuple[int, int], patch: int,
                 ignore: Sequence[int]) -> np.ndarray:
    """Majority label of each patch: ``(h*p, w*p)`` mask -> ``(h*w,)`` int64, -1 = ignored.

    A patch whose most frequent value is in ``ignore`` gets -1 (ties go to the smaller value).
    """
    h, w = grid
    block = mask[: h * patch, : w * patch].astype(np.int64)
    if block.shape != (h * patch, w * patch):
        raise InvalidInputError(f"mask: expected at least {h * patch}x{w * patch} pixels, got "
                                f"{mask.shape}")
    values, inverse = np.unique(block, return_inverse=True)
    per_patch = inverse.reshape(h, patch, w, patch).transpose(0, 2, 1, 3).reshape(h * w, -1)
    counts = np.zeros((h * w, len(values)), np.int64)
    np.add.at(counts, (np.repeat(np.arange(h * w), per_patch.shape[1]), per_patch.ravel()), 1)
    majority = values[counts.argmax(axis=1)]
    return np.where(np.isin(majority, list(ignore)), -1, majority)


@dataclass
class CalibrationReport:
    """Per-layer coherence of one model on a set of labelled images.

    Attributes
    ----------
    model : str
    entry : ModelEntry
        The registry entry the model was used with (base of a saved profile).
    kinds : tuple of str
    scores : dict of kind -> list of float
        Mean AUROC per layer (index 0 = block 1); nan where no window had both same- and
        different-class pairs.
    stds : dict of kind -> list of float
        Standard deviation over windows.
    windows : int
        Windows that contributed (had at least two classes).
    images : int
    short_side, crop, pairs, seed : int
    best_layer : int
        Block (from 1) whose keys score highest: the suggested ``middle_layer``.
    """

    model: str
    entry: ModelEntry
    kinds: tuple[str, ...]
    scores: dict[str, list[float]]
    stds: dict[str, list[float]]
    windows: int
    images: int
    short_side: int
    crop: int
    pairs: int
    seed: int
    best_layer: int

    @property
    def best_score(self) -> float:
        """Key AUROC of :attr:`best_layer`."""
        return self.scores["key"][self.best_layer - 1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nan -> None)."""
        def clean(values: list[float]) -> list[float | None]:
            return [None if math.isnan(v) else round(v, 6) for v in values]
        return {"model": self.model, "entry": dataclasses.asdict(self.entry),
                "kinds": list(self.kinds), "best_layer": self.best_layer,
                "best_score": self.best_score, "windows": self.windows, "images": self.images,
                "short_side": self.short_side, "crop": self.crop, "pairs": self.pairs,
                "seed": self.seed, "scores": {k: clean(v) for k, v in self.scores.items()},
                "stds": {k: clean(v) for k, v in self.stds.items()}}

    def to_markdown(self) -> str:
        """Table: one row per layer, one column per feature kind, best key layer marked."""
        head = "| layer | " + " | ".join(self.kinds) + " |"
        lines = [head, "|---:|" + "---:|" * len(self.kinds)]
        for layer in range(1, len(self.scores["key"]) + 1):
            cells = []
            for kind in self.kinds:
                v = self.scores[kind][layer - 1]
                text = "-" if math.isnan(v) else f"{v:.3f}"
                cells.append(f"**{text}**" if kind == "key" and layer == self.best_layer else text)
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Best key layer: {self.best_layer} (AUROC {self.best_score:.3f}) over "
                     f"{self.windows} windows of {self.images} images; the registry uses "
                     f"{self.entry.middle_layer} ({self.entry.middle_layer_source}).")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """PNG plot of AUROC per layer and kind (matplotlib, Agg backend)."""
        try:
            import matplotlib
            matplotlib.use("Agg", force=False)
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise InvalidConfigError("calibrate plot: expected matplotlib to be installed "
                                     "(pip install matplotlib), got none") from exc
        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        layers = np.arange(1, len(self.scores["key"]) + 1)
        for kind in self.kinds:
            ax.plot(layers, self.scores[kind], marker="o", ms=3, label=kind)
        ax.axvline(self.best_layer, color="0.5", ls="--", lw=1)
        ax.annotate(f"M = {self.best_layer}", (self.best_layer, self.best_score),
                    textcoords="offset points", xytext=(6, 6), fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylabel("coherence (AUROC)")
        ax.set_xticks(layers)
        ax.set_title(title or f"{self.model}: {self.windows} windows, {self.images} images",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path

    def profile_entry(self, name: str, *, checkpoint: str | None = None,
                      stride: int | None = None) -> ModelEntry:
        """The registry entry with the calibrated layer and window (``key = name``)."""
        if self.crop == 0:
            raise InvalidConfigError("profile: expected a calibration with a window size "
                                     "(crop >= 16) to save as the profile's window, got crop 0 "
                                     "(whole image); calibrate with --crop")
        stride = max(1, self.crop // 2) if stride is None else stride
        return dataclasses.replace(
            self.entry, key=name, middle_layer=self.best_layer, crop=self.crop, stride=stride,
            short_side=self.short_side, checkpoint=checkpoint or self.entry.checkpoint,
            middle_layer_source=f"clipseg calibrate: key coherence AUROC "
                                f"{self.best_score:.3f} over {self.windows} windows of "
                                f"{self.images} images",
            description=f"{self.entry.key} calibrated (M={self.best_layer})")

    def save_profile(self, name: str, *, checkpoint: str | None = None,
                     stride: int | None = None) -> Path:
        """Save :meth:`profile_entry` as a named profile; returns the JSON file."""
        from ..models.profiles import save_profile
        return save_profile(name, self.profile_entry(name, checkpoint=checkpoint, stride=stride))


def _check_inputs(images: Sequence[Any], masks: Sequence[Any]) -> None:
    if len(images) != len(masks) or len(images) == 0:
        raise InvalidInputError(f"calibrate: expected the same non-zero number of images and "
                                f"masks, got {len(images)} images and {len(masks)} masks")


@torch.no_grad()
def calibrate(model: Any, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
              kinds: Sequence[str] = KINDS, short_side: int | None = None,
              crop: int | None = None, config: SegmentConfig | None = None,
              pairs: int = 4096, ignore: Sequence[int] = (0,), seed: int = 0,
              progress: bool = False) -> CalibrationReport:
    """Measure per-layer coherence on labelled images and suggest the middle layer.

    Parameters
    ----------
    model : LoadedModel or open_clip CLIP module
        A bare module is wrapped with :func:`clipseg.models.wrap_model` (defaults synthesised).
    images : sequence of numpy.ndarray
        ``(H, W, 3)`` RGB (uint8 or float in [0, 1]); gray or 16-bit data goes through
        :func:`clipseg.image.as_rgb01`.
    masks : sequence of numpy.ndarray
        ``(H, W)`` integer labels matching each image.
    kinds : sequence of str
        Subset of :data:`KINDS`; must include ``"key"`` (the layer is chosen on keys).
    short_side, crop : int or None
        Resize and window size; None = the value of ``config``, else the model's
        (:func:`clipseg.resolve.resolve_config`). Windows do not overlap (stride = crop).
    config : SegmentConfig or None
        Further options of the window pass (``antialias``, ``patch_fit``, ``pos_interp``), as
        inference would use them; None = the defaults.
    pairs : int
        Random patch pairs per window (all pairs when fewer exist).
    ignore : sequence of int
        Mask values that are not a class (0 = unlabeled; use 255 for benchmark labels).
    seed : int
        Seed of the pair sampling.
    """
    from ..models.loading import LoadedModel, wrap_model
    from ..models.towers import tower_for

    loaded = model if isinstance(model, LoadedModel) else wrap_model(model)
    kinds = tuple(kinds)
    if "key" not in kinds or not set(kinds) <= set(KINDS) or len(set(kinds)) != len(kinds):
        raise InvalidConfigError(f"kinds: expected distinct values from {KINDS} including "
                                 f"'key', got {kinds}")
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise InvalidConfigError(f"pairs: expected a positive integer, got {pairs!r}")
    _check_inputs(images, masks)
    entry = loaded.entry
    tower = tower_for(loaded.model)
    p, n_layers = tower.patch_size, tower.num_layers
    if config is not None and not isinstance(config, SegmentConfig):
        raise InvalidConfigError(f"config: expected a SegmentConfig or None, got "
                                 f"{describe(config)}")
    base = config if config is not None else SegmentConfig(model=ModelConfig(model=loaded.name))
    given: dict[str, Any] = {} if short_side is None else {"short_side": short_side}
    if crop is not None:  # windows do not overlap: the stride is the crop (unused for crop 0)
        given.update(crop=crop, stride=crop or None)
    resolved = resolve_config(base.replace(**given), entry, num_layers=n_layers)
    window = dataclasses.replace(resolved.window,
                                 stride=resolved.window.crop or resolved.window.stride)
    short_side, crop = window.short_side, window.crop
    rng = np.random.default_rng(seed)
    per_window: dict[str, list[list[float]]] = {k: [] for k in kinds}
    order: Any = range(len(images))
    if progress:
        from tqdm.auto import tqdm
        order = tqdm(order, desc="calibrate", unit="img", file=sys.stderr)
    for n in order:
        image = as_rgb01(images[n])
        mask = np.asarray(masks[n])
        if mask.ndim != 2 or mask.shape != image.shape[:2] or mask.dtype.kind not in "iub":
            raise InvalidInputError(f"mask {n}: expected integer labels of shape "
                                    f"{image.shape[:2]}, got {describe(mask)}")
        plan = plan_windows(image, window)
        small = nearest(mask, plan.resized_size)
        for box in plan.boxes:
            y0, x0, y1, x1 = box
            fed = fed_size(y1 - y0, x1 - x0, p, window.patch_fit)
            grid = tower.grid_for(*fed)
            labels = patch_labels(nearest(small[y0:y1, x0:x1], fed), grid, p, ignore)
            valid = np.flatnonzero(labels >= 0)
            i, j = sample_pairs(len(valid), pairs, rng)
            if len(i) == 0 or np.all(labels[valid][i] == labels[valid][j]) \
                    or not np.any(labels[valid][i] == labels[valid][j]):
                continue  # AUROC undefined: one class only, or no two patches alike
            pixels = window_pixels(plan.resized, [box], loaded.mean, loaded.std, loaded.device,
                                   p, window.patch_fit)
            x = tower.embed(pixels, resolved.readout.pos_interp)
            scores = {k: [] for k in kinds}
            keep = torch.as_tensor(valid + 1, device=x.device)  # +1 skips the class token
            for layer in range(1, n_layers + 1):
                q, k, v = tower.qkv(layer, x)
                x = tower.run_block(layer, x)
                feats = {"key": k, "query": q, "value": v, "output": x}
                for kind in kinds:
                    scores[kind].append(coherence_auroc(feats[kind][0, keep],
                                                        labels[valid], i, j))
            for kind in kinds:
                per_window[kind].append(scores[kind])
    windows = len(per_window["key"])
    if windows == 0:
        raise InvalidInputError("calibrate: expected at least one window with two or more "
                                "labelled classes, got none; label more than one class per "
                                "image (ignored values: " + ", ".join(map(str, ignore)) + ")")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in per_window.items()}
    means = {k: np.nanmean(a, axis=0).tolist() for k, a in arrays.items()}
    stds = {k: np.nanstd(a, axis=0).tolist() for k, a in arrays.items()}
    best = int(np.nanargmax(means["key"])) + 1
    return CalibrationReport(model=loaded.name, entry=entry, kinds=kinds, scores=means,
                             stds=stds, windows=windows, images=len(images),
                             short_side=short_side, crop=crop, pairs=pairs, seed=seed,
                             best_layer=best)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
