"""PAMR: against a convolution-based reference, its properties, and tiling exactness."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import clipseg.refine as refine
from clipseg.errors import InvalidInputError
from clipseg.refine import local_affinity, pamr


def _shift_kernels(with_centre: bool) -> torch.Tensor:
    """One-hot 3x3 kernels, one per neighbour position (row-major)."""
    eye = torch.eye(9).view(9, 1, 3, 3)
    return eye if with_centre else eye[[0, 1, 2, 3, 5, 6, 7, 8]]


def _neighbours(x: torch.Tensor, kernel: torch.Tensor, d: int) -> torch.Tensor:
    """(C, H, W) -> (C, n, H, W) dilated neighbours by convolution, replicate padding."""
    c, h, w = x.shape
    padded = F.pad(x.view(c, 1, h, w), [d] * 4, mode="replicate")
    return F.conv2d(padded, kernel, dilation=d)


def reference_pamr(image, mask, dilations, iterations):
    """PAMR written out with shift convolutions, as in Araslanov & Roth's formulation."""
    k8, k9 = _shift_kernels(False), _shift_kernels(True)
    std = torch.cat([_neighbours(image, k9, d) for d in dilations], 1).std(1, keepdim=True)
    diff = torch.cat([(image.unsqueeze(1) - _neighbours(image, k8, d)).abs()
                      for d in dilations], 1)
    aff = torch.softmax((-diff / (1e-8 + 0.1 * std)).mean(0), dim=0)      # (N, H, W)
    for _ in range(iterations):
        mask = (torch.cat([_neighbours(mask, k8, d) for d in dilations], 1) * aff).sum(1)
    return mask


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_matches_convolution_reference(gen):
    image = torch.rand(3, 21, 26, generator=gen)
    logits = torch.randn(4, 21, 26, generator=gen)
    out = pamr(image, logits, dilations=(1, 3), iterations=4, tile=512)
    torch.testing.assert_close(out, reference_pamr(image, logits, (1, 3), 4), rtol=1e-5,
                               atol=1e-5)


def test_affinities_are_a_distribution(gen):
    aff = local_affinity(torch.rand(3, 9, 11, generator=gen), (1, 2))
    assert aff.shape == (16, 9, 11)
    torch.testing.assert_close(aff.sum(0), torch.ones(9, 11))
    assert (aff >= 0).all()


def test_constant_logits_stay_constant(gen):
    # Each step is a convex combination of neighbours, so a constant map is a fixed point.
    image = torch.rand(3, 30, 30, generator=gen)
    logits = torch.stack([torch.full((30, 30), 0.3), torch.full((30, 30), -1.2)])
    torch.testing.assert_close(pamr(image, logits, (1, 2), 10, 512), logits)


def test_constant_image_gives_uniform_neighbour_mean(gen):
    # No image structure -> every neighbour weighs 1/N: one step is the plain neighbour mean.
    image = torch.full((3, 12, 15), 0.5)
    logits = torch.randn(2, 12, 15, generator=gen)
    k8 = _shift_kernels(False)
    expected = torch.cat([_neighbours(logits, k8, d) for d in (1, 2)], 1).mean(1)
    torch.testing.assert_close(pamr(image, logits, (1, 2), 1, 512), expected)


def test_step_edge_gets_sharper(gen):
    # Image: a vertical step at column 32. Logits: a blurry ramp centred 3 px off the edge.
    h, w, edge = 24, 64, 32
    image = torch.zeros(3, h, w)
    image[:, :, edge:] = 1.0
    image += 0.02 * torch.rand(3, h, w, generator=gen)
    cols = torch.arange(w, dtype=torch.float32)
    fg = torch.sigmoid((cols - (edge + 3)) / 4.0).expand(h, w)
    logits = torch.stack([1 - fg, fg])
    out = pamr(image, logits, (1, 2, 4), 10, 512)
    truth = (cols >= edge).expand(h, w)

    def iou(prob_fg: torch.Tensor) -> float:
        pred = prob_fg > 0.5
        return float((pred & truth).sum() / (pred | truth).sum())

    assert iou(out[1] / out.sum(0)) > iou(fg) + 0.05
    assert iou(out[1] / out.sum(0)) > 0.99
    # The transition concentrates on the true edge: the steepest step sits there and is much
    # steeper than the blurry input's.
    steps = (out[1, :, 1:] - out[1, :, :-1]).mean(0)
    assert int(steps.argmax()) == edge - 1
    jump = (out[1, :, edge] - out[1, :, edge - 1]).mean()
    assert jump > 5 * (fg[:, edge] - fg[:, edge - 1]).mean()


def test_tiled_equals_untiled(gen):
    image = torch.rand(3, 40, 53, generator=gen)
    logits = torch.randn(3, 40, 53, generator=gen)
    whole = pamr(image, logits, (1, 2), 3, tile=512)
    tiled = pamr(image, logits, (1, 2), 3, tile=7)   # halo 6 > tile: many overlapping regions
    torch.testing.assert_close(tiled, whole, rtol=1e-6, atol=1e-6)
    tiled = pamr(image, logits, (1, 2), 3, tile=16)
    torch.testing.assert_close(tiled, whole, rtol=1e-6, atol=1e-6)


def test_tile_loop_bounds_memory(gen, monkeypatch):
    # Every region handed to the per-region kernel is at most (tile + 2 halo)^2 pixels, and
    # classes are processed in chunks no bigger than the class-chunk budget.
    h, w, tile, dil, iters = 50, 70, 16, (1, 2), 2
    halo = iters * max(dil)
    regions, chunks = [], []
    real_region, real_propagate = refine._pamr_region, refine.propagate

    def spy_region(image, logits, dilations, iterations):
        regions.append(tuple(logits.shape))
        return real_region(image, logits, dilations, iterations)

    def spy_propagate(mask, affinity, dilations, iterations):
        chunks.append(mask.shape[0] * mask.shape[1] * mask.shape[2])
        return real_propagate(mask, affinity, dilations, iterations)

    monkeypatch.setattr(refine, "_pamr_region", spy_region)
    monkeypatch.setattr(refine, "propagate", spy_propagate)
    monkeypatch.setattr(refine, "CLASS_CHUNK_FLOATS", 2 * (tile + 2 * halo) ** 2)
    image = torch.rand(3, h, w, generator=gen)
    logits = torch.randn(5, h, w, generator=gen)
    out = pamr(image, logits, dil, iters, tile=tile)
    assert len(regions) == math.ceil(h / tile) * math.ceil(w / tile)
    assert all(k == 5 and rh <= tile + 2 * halo and rw <= tile + 2 * halo
               for k, rh, rw in regions)
    assert max(chunks) <= 2 * (tile + 2 * halo) ** 2
    torch.testing.assert_close(out, reference_pamr(image, logits, dil, iters), rtol=1e-5,
                               atol=1e-5)


def test_bad_input(gen):
    image, logits = torch.rand(3, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(InvalidInputError, match="same size"):
        pamr(image, torch.rand(2, 8, 9))
    with pytest.raises(InvalidInputError, match="dilations"):
        pamr(image, logits, dilations=(0,))
    with pytest.raises(InvalidInputError, match="iterations"):
        pamr(image, logits, iterations=0)
    with pytest.raises(InvalidInputError, match=r"\(C, H, W\)"):
        pamr(torch.rand(8, 8), logits)
