"""The synthetic scene generator: determinism, ground truth that matches the pixels, captions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clipseg.apps import synthetic
from clipseg.apps.synthetic import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLORS,
    SHAPE_CLASSES,
    caption,
    make_batch,
    make_scene,
    miou,
)
from clipseg.errors import InvalidInputError


def test_class_list_is_shapes_then_backgrounds():
    assert len(SHAPE_CLASSES) == len(COLORS) * len(synthetic.SHAPES) == 12
    assert CLASS_NAMES == SHAPE_CLASSES + BACKGROUNDS
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = make_scene(7, (40, 56)), make_scene(7, (40, 56)), make_scene(8, (40, 56))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.shapes == b.shapes and a.backgrounds == b.backgrounds
    assert not np.array_equal(a.image, c.image)
    batch1, batch2 = make_batch(3, 4), make_batch(3, 4)
    for s1, s2 in zip(batch1, batch2):
        np.testing.assert_array_equal(s1.image, s2.image)


def test_shapes_and_dtypes():
    scene = make_scene(0, (48, 80))
    assert scene.image.shape == (48, 80, 3) and scene.image.dtype == np.float32
    assert scene.labels.shape == (48, 80) and scene.labels.dtype == np.uint8
    assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
    assert scene.labels.min() >= 1 and scene.labels.max() <= len(CLASS_NAMES)


@pytest.mark.parametrize("seed", range(6))
def test_ground_truth_matches_the_pixels(seed):
    """Each shape label's pixels carry its named colour; background pixels are grey."""
    scene = make_scene(seed, (64, 96), n_shapes=(3, 5))
    palette = np.array(list(COLORS.values()), np.float32)
    for name in scene.present:
        label = CLASS_NAMES.index(name) + 1
        pixels = scene.image[scene.labels == label]
        mean = pixels.mean(0)
        if name in SHAPE_CLASSES:
            nearest = list(COLORS)[int(np.argmin(((palette - mean) ** 2).sum(1)))]
            assert nearest == name.split(" ")[0]
            assert (pixels.max(1) - pixels.min(1)).mean() > 0.4  # saturated
        else:
            assert (pixels.max(1) - pixels.min(1)).mean() < 0.2  # grey texture


def test_shape_areas_match_geometry():
    """Mask areas against the closed-form areas (circumradius r) of each shape."""
    r = 20.0
    expected = {"circle": math.pi * r * r, "square": 2 * r * r,
                "triangle": 3 * math.sqrt(3) / 4 * r * r}
    for shape, area in expected.items():
        for angle in (0.0, 0.7):
            mask = synthetic._shape_mask(shape, 100, 100, 50.0, 50.0, r, angle)
            assert abs(mask.sum() - area) / area < 0.03, (shape, angle, mask.sum(), area)


def test_backgrounds_only_and_two_backgrounds():
    plain = make_scene(1, (32, 32), n_shapes=(0, 0), two_backgrounds=0.0)
    assert plain.shapes == () and len(plain.backgrounds) == 1
    assert set(plain.present) == set(plain.backgrounds)
    split = [make_scene(s, (64, 64), n_shapes=(0, 0), two_backgrounds=1.0) for s in range(10)]
    assert sum(len(s.backgrounds) == 2 for s in split) >= 8
    for s in split:
        assert set(s.present) == set(s.backgrounds)


def test_caption_names_exactly_what_is_visible():
    rng = np.random.default_rng(0)
    for seed in range(10):
        scene = make_scene(seed, (64, 64))
        text = caption(scene, rng)
        for name in scene.present:
            assert name in text
        for name in set(CLASS_NAMES) - set(scene.present):
            assert name not in text


def test_miou_against_hand_computed_values():
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 2], [1, 0, 2, 3]])
    # class 1: truth 4 px, pred 4 px, inter 3 -> 3 / 5
    # class 2: truth 4 px, pred 2 px, inter 2 -> 2 / 4; class 3: truth 0, pred 1 -> 0 / 1
    assert miou(pred, truth, 3) == pytest.approx((3 / 5 + 2 / 4 + 0 / 1) / 3)
    assert miou(truth, truth, 3) == 1.0
    ignored = truth.copy()
    ignored[:, :2] = 0  # truth 0 is ignored: columns 2-3 remain, predicted 1, 2, 2, 3
    assert miou(pred, ignored, 3) == pytest.approx((0 / 1 + 2 / 4 + 0 / 1) / 3)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(InvalidInputError, match="size"):
        make_scene(0, (8, 64))
    with pytest.raises(InvalidInputError, match="n_shapes"):
        make_scene(0, (32, 32), n_shapes=(3, 1))
    with pytest.raises(InvalidInputError, match="same shape"):
        miou(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(InvalidInputError, match="count"):
        make_batch(0, 0)
