"""Window grid, resize, stitching and upsampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipseg.errors import InvalidInputError
from clipseg.tiling import (
    Stitcher,
    model_input_size,
    resize_short_side,
    resized_shape,
    upsample_logits,
    window_boxes,
)


# -- window grid ---------------------------------------------------------------------------------
def test_window_boxes_matches_hand_computed_grid():
    # 448 px, crop 224, stride 112: (448 - 224 + 111) // 112 + 1 = 3 starts per axis.
    boxes = window_boxes(448, 448, 224, 112)
    starts = [0, 112, 224]
    assert boxes == [(y, x, y + 224, x + 224) for y in starts for x in starts]


def test_window_boxes_last_window_is_shifted_flush():
    # 500 rows: (500 - 224 + 111) // 112 + 1 = 4 grids; the 4th would end at 560 -> 276..500.
    boxes = window_boxes(500, 224, 224, 112)
    assert [(b[0], b[2]) for b in boxes] == [(0, 224), (112, 336), (224, 448), (276, 500)]
    assert all((b[1], b[3]) == (0, 224) for b in boxes)


@pytest.mark.parametrize("height,width,crop,stride", [
    (37, 91, 16, 5), (64, 64, 32, 32), (100, 33, 32, 16), (33, 33, 32, 1), (17, 200, 16, 16)])
def test_window_boxes_properties(height, width, crop, stride):
    boxes = window_boxes(height, width, crop, stride)
    cover = np.zeros((height, width), dtype=int)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (min(crop, height), min(crop, width))
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    ys = sorted({b[0] for b in boxes})
    assert ys[0] == 0 and max(b[2] for b in boxes) == height
    assert all(b - a <= stride for a, b in zip(ys, ys[1:]))


def test_image_smaller_than_crop_gives_one_window_of_its_size():
    assert window_boxes(20, 30, 32, 16) == [(0, 0, 20, 30)]
    # Smaller along one axis only: full height, slide along the other.
    boxes = window_boxes(20, 100, 32, 16)
    assert all(b[0] == 0 and b[2] == 20 for b in boxes)
    assert len(boxes) == (100 - 32 + 15) // 16 + 1


def test_window_boxes_rejects_bad_geometry():
    with pytest.raises(InvalidInputError, match="stride"):
        window_boxes(64, 64, 16, 32)
    with pytest.raises(InvalidInputError, match="crop"):
        window_boxes(64, 64, 0, 1)


def test_model_input_size_rounds_up_to_patch_multiple():
    assert model_input_size(224, 224, 16) == (224, 224)
    assert model_input_size(20, 30, 8) == (24, 32)
    assert model_input_size(2, 9, 8) == (8, 16)


# -- resize ---------------------------------------------------------------------------------------
def test_resized_shape_keeps_aspect():
    assert resized_shape(300, 600, 448) == (448, 896)
    assert resized_shape(1000, 750, 448) == (597, 448)   # 1000 * 448 / 750 = 597.33
    assert resized_shape(5, 7, None) == (5, 7)


def test_resize_none_returns_float32_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    out = resize_short_side(img, None)
    assert out.dtype == np.float32 and np.array_equal(out, img.astype(np.float32))


def test_resize_shrink_is_antialiased():
    # A one-pixel checkerboard averages to 0.5 when shrunk 8x with anti-aliasing; plain
    # bilinear sampling would land on single pixels (0 or 1).
    yy, xx = np.mgrid[:128, :128]
    board = ((yy + xx) % 2).astype(np.float32)[..., None].repeat(3, axis=2)
    out = resize_short_side(board, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert np.abs(out - 0.5).max() < 0.05


def test_resize_enlarge_is_bilinear_and_constant_preserving():
    const = np.full((10, 20, 3), 0.3, dtype=np.float32)
    np.testing.assert_allclose(resize_short_side(const, 40), 0.3, atol=1e-6)
    ramp = np.linspace(0, 1, 20, dtype=np.float32)[None, :, None].repeat(10, 0).repeat(3, 2)
    out = resize_short_side(ramp, 20)
    assert out.shape == (20, 40, 3)
    assert np.all(np.diff(out[0, :, 0]) >= -1e-6)  # monotone, no overshoot
    assert out.min() >= 0 and out.max() <= 1


# -- upsampling and stitching ---------------------------------------------------------------------
def test_upsample_logits_half_pixel_centres():
    # align_corners=False, 2x: output centres at input coords -0.25, 0.25, 0.75, 1.25, with
    # edge clamping -> [0, 0.25, 0.75, 1] for a [0, 1] row.
    logits = torch.tensor([[[0.0, 1.0]]])
    out = upsample_logits(logits, (1, 4))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
    same = torch.randn(2, 3, 4)
    assert upsample_logits(same, (3, 4)) is same
    batch = torch.randn(3, 2, 5, 6)
    up = upsample_logits(batch, (9, 13))
    assert up.shape == (3, 2, 9, 13)
    for i in range(3):
        torch.testing.assert_close(up[i], upsample_logits(batch[i], (9, 13)))


def test_stitcher_averages_overlaps():
    st = Stitcher(2, 4, 6)
    st.add((0, 0, 4, 4), torch.full((2, 4, 4), 1.0))
    st.add((0, 2, 4, 6), torch.full((2, 4, 4), 3.0))
    out = st.result()
    assert out.shape == (2, 4, 6) and out.dtype == torch.float32
    expected = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).expand(2, 4, 6)
    torch.testing.assert_close(out, expected)


def test_window_local_function_stitched_equals_whole():
    # A pixel-wise function computed per window and stitched must equal computing it whole,
    # whatever the overlaps; this checks the box bookkeeping end to end.
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(3, 45, 70, generator=gen)

    def f(x: torch.Tensor) -> torch.Tensor:  # (3, h, w) -> (2, h, w)
        return torch.stack([x[0] * 2 - x[1], torch.sin(x[2] * 5)])

    st = Stitcher(2, 45, 70)
    for y0, x0, y1, x1 in window_boxes(45, 70, 16, 7):
        st.add((y0, x0, y1, x1), f(image[:, y0:y1, x0:x1]))
    torch.testing.assert_close(st.result(), f(image))


def test_stitcher_errors():
    st = Stitcher(1, 4, 4)
    with pytest.raises(InvalidInputError, match="shape"):
        st.add((0, 0, 2, 2), torch.zeros(1, 3, 2))
    with pytest.raises(InvalidInputError, match="inside"):
        st.add((0, 0, 5, 2), torch.zeros(1, 5, 2))
    st.add((0, 0, 2, 4), torch.zeros(1, 2, 4))
    with pytest.raises(InvalidInputError, match="8 pixels without a window"):
        st.result()
