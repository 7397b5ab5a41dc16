"""Segmentation metrics (mIoU, per-class IoU, pixel accuracy) and a rank-based AUROC.

The IoU conventions follow mmsegmentation's ``IoUMetric``, which every training-free peer
(SCLIP, ClearCLIP, NACLIP, TCL) reports with:

- ground-truth pixels equal to ``ignore_index`` (255) are dropped before counting;
- areas are summed over the whole dataset first, then IoU is computed per class
  (``intersection / union``), *not* averaged over images;
- a class whose union is zero (absent from both prediction and ground truth over the whole
  dataset) has IoU ``nan`` and is left out of the mean (``nanmean``);
- a prediction outside ``0..num_classes-1`` (for example the engine's label 0 "unlabeled" on
  a dataset without a background class) belongs to no class: it is a miss for the
  ground-truth class of that pixel and a false positive for none.

The confusion matrix keeps that last case visible as an extra column.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError, describe

#: Ground-truth value that marks pixels excluded from evaluation (mmseg / the peers' convention).
IGNORE_INDEX = 255


def _as_int_array(name: str, value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise InvalidInputError(f"{name}: expected an integer label array, got {describe(array)}")
    return array.astype(np.int64, copy=False)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Pixel counts of (ground-truth class, predicted class) pairs.

    Parameters
    ----------
    pred : numpy.ndarray
        ``(H, W)`` (any shape) integer predicted class ids. Values outside
        ``0..num_classes-1`` mean "no class".
    gt : numpy.ndarray
        Integer ground-truth class ids, same shape as ``pred``; ``ignore_index`` marks pixels
        that are not counted. Any other value must lie in ``0..num_classes-1``.
    num_classes : int
        Number of evaluated classes N.
    ignore_index : int or None
        Ground-truth value to skip (255); None skips nothing.

    Returns
    -------
    numpy.ndarray
        ``(N, N + 1)`` int64: ``cm[g, p]`` counts pixels of ground truth ``g`` predicted as
        ``p``; the last column counts pixels of ground truth ``g`` predicted as no class.

    Raises
    ------
    InvalidInputError
        On shape mismatch, non-integer arrays or ground-truth values out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise InvalidInputError(f"num_classes: expected a positive integer, got {num_classes!r}")
    pred = _as_int_array("pred", pred)
    gt = _as_int_array("gt", gt)
    if pred.shape != gt.shape:
        raise InvalidInputError(
            f"pred and gt: expected the same shape, got {pred.shape} and {gt.shape}")
    valid = np.ones(gt.shape, dtype=bool) if ignore_index is None else gt != ignore_index
    g = gt[valid]
    p = pred[valid]
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        bad = g[(g < 0) | (g >= num_classes)]
        raise InvalidInputError(
            f"gt: expected class ids in 0..{num_classes - 1} or the ignore value "
            f"{ignore_index}, got value(s) {np.unique(bad)[:10].tolist()}")
    p = np.where((p >= 0) & (p < num_classes), p, num_classes)
    flat = g * (num_classes + 1) + p
    counts = np.bincount(flat, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores derived from a confusion matrix.

    Attributes
    ----------
    iou : numpy.ndarray
        ``(N,)`` float64 per-class IoU; ``nan`` where the class is absent from both the
        prediction and the ground truth.
    miou : float
        ``nanmean(iou)`` (``nan`` when every class is absent).
    pixel_accuracy : float
        Correct pixels / evaluated (non-ignored) ground-truth pixels (``nan`` when none).
    class_accuracy : numpy.ndarray
        ``(N,)`` float64 per-class recall (``nan`` for classes absent from the ground truth).
    """

    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray


def scores_from_confusion(cm: np.ndarray) -> SegmentationScores:
    """IoU, mIoU and accuracies of a ``(N, N + 1)`` confusion matrix from
    :func:`confusion_matrix` (a square ``(N, N)`` matrix is accepted too)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[1] not in (cm.shape[0], cm.shape[0] + 1) or cm.shape[0] < 1:
        raise InvalidInputError(
            f"confusion matrix: expected shape (N, N) or (N, N + 1), got {describe(cm)}")
    n = cm.shape[0]
    cm = cm.astype(np.float64)
    tp = np.diag(cm[:, :n])
    gt_area = cm.sum(axis=1)
    pred_area = cm[:, :n].sum(axis=0)
    union = gt_area + pred_area - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        class_acc = np.where(gt_area > 0, tp / np.where(gt_area > 0, gt_area, 1), np.nan)
    total = gt_area.sum()
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(iou=iou, miou=miou, pixel_accuracy=acc, class_accuracy=class_acc)


class ConfusionAccumulator:
    """Sums confusion matrices over a dataset (the mmseg way: areas first, IoU at the end).

    Parameters
    ----------
    num_classes : int
        Number of evaluated classes N.
    ignore_index : int or None
        Ground-truth value that is not counted (255).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` and ``gt`` are ``(H, W)`` integer class ids."""
        self.matrix += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.images += 1

    def scores(self) -> SegmentationScores:
        """Scores of everything added so far."""
        return scores_from_confusion(self.matrix)


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve from rank statistics (Mann-Whitney U), ties averaged.

    Parameters
    ----------
    scores : numpy.ndarray
        ``(M,)`` real-valued scores, higher = more likely positive.
    targets : numpy.ndarray
        ``(M,)`` booleans (or 0/1): the positive class.

    Returns
    -------
    float
        AUROC in [0, 1]; equals ``sklearn.metrics.roc_auc_score(targets, scores)``. ``nan``
        when ``targets`` holds only one class (AUROC is undefined).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets).ravel()
    if s.shape != t.shape:
        raise InvalidInputError(
            f"scores and targets: expected the same length, got {s.shape} and {t.shape}")
    if t.dtype.kind == "b":
        positive = t
    elif t.dtype.kind in "iuf" and np.isin(t, (0, 1)).all():
        positive = t.astype(bool)
    else:
        raise InvalidInputError(f"targets: expected booleans or 0/1, got {describe(t)}")
    if not np.isfinite(s).all():
        raise InvalidInputError("scores: expected finite values, got nan or inf")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks (1-based) with ties sharing the mean of the ranks they span
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # last rank of each tie group
    mean_rank = ends - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
