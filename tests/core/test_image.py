"""Image validation, explicit conversion and normalisation into pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipseg.errors import InvalidInputError
from clipseg.image import as_rgb01, to_pixels, validate_rgb

# -- validate_rgb -------------------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    np.zeros((2, 2, 3), np.uint8), np.full((5, 7, 3), 255, np.uint8),
    np.zeros((4, 3, 3), np.float32), np.ones((4, 3, 3), np.float64),
    np.full((3, 3, 3), 0.5, np.float16),
])
def test_valid_images_pass_unchanged(image):
    assert validate_rgb(image) is image


@pytest.mark.parametrize("image, match", [
    (np.zeros((1, 1, 3), np.uint8), "at least 2 pixels"),
    (np.zeros((1, 8, 3), np.uint8), "at least 2 pixels"),
    (np.zeros((8, 8, 4), np.uint8), "RGBA.*as_rgb01"),
    (np.zeros((8, 8, 3), np.uint16), "16-bit.*contrast_limits"),
    (np.zeros((8, 8, 3), np.int32), "32-bit"),
    (np.zeros((8, 8), np.uint8), "2-D gray.*as_rgb01"),
    (np.zeros((2, 8, 8, 3), np.uint8), "4-D"),
    (np.zeros((8,), np.uint8), "1-D"),
    (np.zeros((8, 8, 3), bool), "non-numeric"),
    (np.array([[["a"] * 3] * 2] * 2), "non-numeric"),
    (np.zeros((8, 8, 3), np.complex64), "non-numeric"),
    (np.zeros((8, 8, 1), np.uint8), "single-channel"),
    (np.zeros((3, 8, 8), np.uint8), "channel_axis=0"),
    (np.zeros((8, 8, 5), np.uint8), "channels=.r, g, b."),
    ([[[0, 0, 0]] * 2] * 2, "numpy array"),
])
def test_invalid_images(image, match):
    with pytest.raises(InvalidInputError, match=match) as info:
        validate_rgb(image)
    message = str(info.value)
    assert "expected" in message and "got" in message
    if "pixels" not in match:  # every fixable case says which conversion fixes it
        assert "as_rgb01" in message or "np.asarray" in message


@pytest.mark.parametrize("value, match", [
    (np.nan, "NaN"), (np.inf, "infinity"), (1.5, r"\[0, 1\].*got values in \[0, 1.5\]"),
    (-0.25, r"got values in \[-0.25, 0\]"),
])
def test_invalid_float_values(value, match):
    image = np.zeros((4, 4, 3), np.float32)
    image[1, 2, 0] = value
    with pytest.raises(InvalidInputError, match=match) as info:
        validate_rgb(image)
    assert "as_rgb01" in str(info.value)


# -- as_rgb01 -----------------------------------------------------------------------------------

def test_gray_is_replicated():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = as_rgb01(gray)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], gray / 255.0, rtol=1e-6)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_rgba_drops_alpha():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_allclose(as_rgb01(rgba), rgba[..., :3] / 255.0, rtol=1e-6)


def test_uint16_min_max_and_contrast_limits():
    data = np.array([[100, 300], [500, 1100]], np.uint16)
    out = as_rgb01(data)
    np.testing.assert_allclose(out[..., 0], (data - 100) / 1000.0, rtol=1e-6)
    limited = as_rgb01(data, contrast_limits=(200, 600))
    np.testing.assert_allclose(limited[..., 1], [[0, 0.25], [0.75, 1.0]], rtol=1e-6)


def test_uint8_with_contrast_limits_and_constant_image():
    data = np.full((3, 3, 3), 100, np.uint8)
    np.testing.assert_allclose(as_rgb01(data, contrast_limits=(50, 150)), 0.5)
    assert (as_rgb01(np.full((3, 3), 7, np.int32)) == 0).all()


def test_float_data():
    inside = np.linspace(0, 1, 12, dtype=np.float64).reshape(2, 2, 3)
    np.testing.assert_allclose(as_rgb01(inside), inside, rtol=1e-6)
    outside = inside * 4 - 1  # [-1, 3]: stretched min..max
    np.testing.assert_allclose(as_rgb01(outside), inside, rtol=1e-6, atol=1e-7)
    clipped = as_rgb01(outside, contrast_limits=(0.0, 2.0))
    np.testing.assert_allclose(clipped, np.clip(outside / 2.0, 0, 1), rtol=1e-6)
    with pytest.raises(InvalidInputError, match="NaN"):
        as_rgb01(np.full((2, 2), np.nan))
    nan_in_unused = np.zeros((2, 2, 4))
    nan_in_unused[..., 3] = np.nan  # only the channel left out may hold NaN
    assert (as_rgb01(nan_in_unused, channels=(0, 1, 2)) == 0).all()


def test_multichannel_selection_and_channel_axis():
    stack = np.stack([np.full((4, 5), v, np.uint16) for v in (0, 10, 20, 30, 40)])  # (C, H, W)
    out = as_rgb01(stack, channel_axis=0, channels=(4, None, 1), contrast_limits=(0, 40))
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out[0, 0], [1.0, 0.0, 0.25])
    per_channel = as_rgb01(stack, channel_axis=0, channels=(1, 2, 3),
                           contrast_limits=[(0, 10), (0, 40), (20, 40)])
    np.testing.assert_allclose(per_channel[0, 0], [1.0, 0.5, 0.5])
    chw = np.random.default_rng(1).random((3, 4, 5))
    np.testing.assert_allclose(as_rgb01(chw, channel_axis=0), np.moveaxis(chw, 0, -1),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": (0, 1)}, "three channel"), ({"channels": (None, None, None)}, "at least one"),
    ({"channels": (0, 1, 9)}, r"index in \[-5, 4\]"), ({"contrast_limits": (5, 5)}, "low < high"),
    ({"contrast_limits": (0, 1, 2)}, "contrast_limits"), ({"channel_axis": 3}, "channel_axis"),
])
def test_as_rgb01_errors(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        as_rgb01(np.zeros((4, 4, 5), np.uint16), **kwargs)


def test_as_rgb01_shape_errors():
    with pytest.raises(InvalidInputError, match="channels=.r, g, b."):
        as_rgb01(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InvalidInputError, match="4-D"):
        as_rgb01(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="at least 2 pixels"):
        as_rgb01(np.zeros((1, 1), np.uint8))
    with pytest.raises(InvalidInputError, match="numeric"):
        as_rgb01(np.array([["a", "b"], ["c", "d"]]))
    assert as_rgb01(np.eye(3, dtype=bool))[1, 1, 0] == 1.0


# -- to_pixels ----------------------------------------------------------------------------------

def test_to_pixels_normalises_uint8_and_float_alike():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)
    pixels = to_pixels(image, mean, std, "cpu", torch.float32)
    assert pixels.shape == (1, 3, 6, 7) and pixels.dtype == torch.float32
    expected = (image.transpose(2, 0, 1) / 255.0 - np.reshape(mean, (3, 1, 1))) \
        / np.reshape(std, (3, 1, 1))
    np.testing.assert_allclose(pixels[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    as_float = to_pixels(image.astype(np.float64) / 255.0, mean, std, torch.device("cpu"),
                         torch.float32)
    torch.testing.assert_close(as_float, pixels)
    half = to_pixels(image, mean, std, "cpu", torch.float16)
    assert half.dtype == torch.float16


def test_to_pixels_errors():
    image = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(InvalidInputError, match="std"):
        to_pixels(image, (0, 0, 0), (1, 0, 1), "cpu", torch.float32)
    with pytest.raises(InvalidInputError, match="mean"):
        to_pixels(image, (0, 0), (1, 1, 1), "cpu", torch.float32)
    with pytest.raises(InvalidInputError, match="dtype"):
        to_pixels(image, (0, 0, 0), (1, 1, 1), "cpu", torch.int64)
    with pytest.raises(InvalidInputError, match="RGBA"):
        to_pixels(np.zeros((4, 4, 4), np.uint8), (0, 0, 0), (1, 1, 1), "cpu", torch.float32)
