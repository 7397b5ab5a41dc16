"""Metric tests against hand-computed confusion matrices and scikit-learn's AUROC."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clipseg.apps.metrics import (
    ConfusionAccumulator,
    auroc,
    confusion_matrix,
    scores_from_confusion,
)
from clipseg.errors import InvalidInputError


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 1],
                   [1, 2, 255]])
    pred = np.array([[0, 1, 1],
                     [1, 0, 2]])
    cm = confusion_matrix(pred, gt, 3)
    # rows = gt, cols = pred (+ "no class"); the 255 pixel is not counted at all
    expected = np.array([[1, 1, 0, 0],
                         [0, 2, 0, 0],
                         [1, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    s = scores_from_confusion(cm)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: 0/(1+0)
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 3, 0.0])
    assert s.miou == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s.pixel_accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(s.class_accuracy, [0.5, 1.0, 0.0])


def test_absent_class_is_nan_and_left_out_of_the_mean():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])
    s = scores_from_confusion(confusion_matrix(pred, gt, 4))
    # class 0: tp 2, gt 2, pred 3 -> 2/3; class 1: tp 1, gt 2, pred 1 -> 1/2;
    # classes 2, 3 absent from both -> nan
    assert s.iou[0] == pytest.approx(2 / 3) and s.iou[1] == pytest.approx(0.5)
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])
    assert s.miou == pytest.approx((2 / 3 + 0.5) / 2)


def test_predicted_but_absent_class_counts_as_zero():
    gt = np.array([0, 0, 0])
    pred = np.array([0, 0, 1])
    s = scores_from_confusion(confusion_matrix(pred, gt, 2))
    np.testing.assert_allclose(s.iou, [2 / 3, 0.0])
    assert s.miou == pytest.approx(1 / 3)


def test_out_of_range_prediction_is_a_miss_for_the_gt_class_only():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 7, 1, -1])  # 7 and -1 are "no class"
    cm = confusion_matrix(pred, gt, 2)
    np.testing.assert_array_equal(cm, [[1, 0, 1], [0, 1, 1]])
    s = scores_from_confusion(cm)
    np.testing.assert_allclose(s.iou, [0.5, 0.5])
    assert s.pixel_accuracy == pytest.approx(0.5)


def test_accumulator_sums_areas_before_dividing():
    acc = ConfusionAccumulator(2)
    acc.update(np.array([0, 0]), np.array([0, 0]))       # class 0 perfect, 2 pixels
    acc.update(np.array([1, 1, 1, 1]), np.array([0, 0, 0, 1]))
    s = acc.scores()
    # totals: class 0 tp 2, gt 5, pred 2 -> 2/5; class 1 tp 1, gt 1, pred 4 -> 1/4
    np.testing.assert_allclose(s.iou, [2 / 5, 1 / 4])
    assert acc.images == 2
    # a per-image average would differ: image 1 mIoU 1.0 (class 1 absent), image 2 (0 + 1/4)/2
    assert s.miou != pytest.approx((1.0 + 0.125) / 2)


def test_matches_an_independent_loop_on_random_labels():
    rng = np.random.default_rng(3)
    n = 5
    gt = rng.integers(0, n, size=(40, 30))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, n, size=gt.shape)
    s = scores_from_confusion(confusion_matrix(pred, gt, n))
    valid = gt != 255
    for c in range(n):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        assert s.iou[c] == pytest.approx(inter / union)
    assert s.pixel_accuracy == pytest.approx(np.mean(pred[valid] == gt[valid]))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InvalidInputError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(InvalidInputError, match="class ids in 0..1"):
        confusion_matrix(np.zeros(3, int), np.array([0, 1, 5]), 2)
    with pytest.raises(InvalidInputError, match="integer"):
        confusion_matrix(np.zeros(3), np.zeros(3, int), 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random(500) < 0.3
    scores = np.round(rng.normal(size=500) + targets * 0.8, 1)  # rounding makes many ties
    assert auroc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)


def test_auroc_extremes_and_undefined():
    t = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), t) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), t) == 0.0
    assert auroc(np.ones(4), t) == 0.5
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    with pytest.raises(InvalidInputError):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))
