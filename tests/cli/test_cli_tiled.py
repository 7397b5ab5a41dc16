"""Tiled processing of large images equals the untiled run; huge TIFFs are read lazily."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from clipseg.apps.cli import EXIT_OK, main
from clipseg.apps.largeimage import ImageSource, open_image, plan_tiles, segment_tile
from clipseg.config import SegmentConfig
from clipseg.formats import io
from clipseg.pipeline import Segmenter
from clipseg.text import parse_classes
from clipseg.tiling import window_boxes
from tests.cli.conftest import save, scene

CLASSES = "red, green, blue, dark"
PAMR = ["--pamr", "--pamr-dilations", "1", "2", "--pamr-iterations", "3"]


def _native(model_args):
    args = list(model_args)
    args[args.index("--short-side") + 1] = "0"
    return args


def _segment(src, out, model_args, *extra):
    return main(["segment", str(src), "--classes", CLASSES, "-o", str(out), "--scores",
                 *_native(model_args), *extra])


@pytest.mark.parametrize("extra", [[], PAMR], ids=["plain", "pamr"])
def test_tiled_cli_run_equals_untiled(tmp_path, model_args, extra):
    src = save(tmp_path / "big.png", scene(5, (90, 120)))
    assert _segment(src, tmp_path / "whole", model_args, "--tile-size", "0", *extra) == EXIT_OK
    assert _segment(src, tmp_path / "tiled", model_args, "--tile-size", "48", *extra) == EXIT_OK
    whole, _ = io.read_labels(tmp_path / "whole" / "big")
    tiled, meta = io.read_labels(tmp_path / "tiled" / "big", lazy=True)
    assert meta["file"] == "big.tif" and meta["image"]["tiled"] is True
    assert isinstance(tiled, np.memmap)           # streamed to an uncompressed, mappable TIFF
    np.testing.assert_array_equal(np.asarray(tiled), whole)
    tiled_scores = tifffile.imread(tmp_path / "tiled" / "big.scores.tif").astype(np.float32)
    whole_scores = tifffile.imread(tmp_path / "whole" / "big.scores.tif").astype(np.float32)
    # float16 files: equal, except where PAMR's ~1e-7 float32 difference crosses a rounding
    # boundary of float16 (one step, <= 1e-3 near 1)
    np.testing.assert_allclose(tiled_scores, whole_scores, rtol=0, atol=0 if not extra else 1e-3)
    assert len(np.unique(whole)) > 1


@pytest.mark.parametrize("pamr", [False, True])
def test_tiled_probabilities_match_in_float32(tiny_files, pamr):
    """Same windows, same sums: measured max difference 1.2e-7 on CPU, with or without PAMR
    (windows are batched differently, which changes float rounding, not the result)."""
    image = scene(6, (50, 70))
    config = SegmentConfig.from_flat(model=tiny_files["name"], device="cpu", short_side=0,
                                     checkpoint=str(tiny_files["weights"]), pamr=pamr,
                                     pamr_dilations=(1, 3), pamr_iterations=2)
    classes = parse_classes(CLASSES)
    seg = Segmenter(config)
    whole = seg.segment(image, classes)
    probs = np.full(whole.probs.shape, np.nan, np.float32)
    labels = np.zeros_like(whole.labels)
    for tile in plan_tiles(50, 70, 32, 32, 16, halo=6 if pamr else 0):
        (y0, x0, y1, x1), (ry0, rx0, ry1, rx1) = tile.core, tile.region
        part = seg.segment(image[ry0:ry1, rx0:rx1], classes)
        inner = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
        probs[:, y0:y1, x0:x1] = part.probs[(slice(None),) + inner]
        labels[y0:y1, x0:x1] = part.labels[inner]
    assert not np.isnan(probs).any()
    assert np.abs(probs - whole.probs).max() <= 1e-6
    np.testing.assert_array_equal(labels, whole.labels)


def test_segment_tile_keeps_the_core(tiny_files):
    image = scene(9, (40, 60))
    config = SegmentConfig.from_flat(model=tiny_files["name"], device="cpu", short_side=0,
                                     checkpoint=str(tiny_files["weights"]))
    seg, classes = Segmenter(config), parse_classes(CLASSES)
    tile = plan_tiles(40, 60, 16, 32, 16)[4]
    res = segment_tile(seg, ImageSource("mem", image), tile, classes, scores=True)
    (y0, x0, y1, x1), (ry0, rx0, ry1, rx1) = tile.core, tile.region
    part = seg.segment(image[ry0:ry1, rx0:rx1], classes)
    np.testing.assert_array_equal(res.labels, part.labels[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0])
    assert res.probs.dtype == np.float16 and res.probs.shape == (4, y1 - y0, x1 - x0)


@pytest.mark.parametrize("size, tile, crop, stride, halo",
                         [(150, 48, 32, 16, 0), (150, 50, 32, 16, 6), (31, 16, 32, 16, 0),
                          (200, 64, 40, 24, 20), (97, 40, 32, 32, 0)])
def test_tile_regions_are_unions_of_global_windows(size, tile, crop, stride, halo):
    tiles = plan_tiles(size, size, tile, crop, stride, halo)
    cover = np.zeros((size, size), int)
    global_windows = set(window_boxes(size, size, crop, stride))
    for t in tiles:
        y0, x0, y1, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        ry0, rx0, ry1, rx1 = t.region
        local = {(a + ry0, b + rx0, c + ry0, d + rx0)
                 for a, b, c, d in window_boxes(ry1 - ry0, rx1 - rx0, crop, stride)}
        inside = {w for w in global_windows if w[0] >= ry0 and w[1] >= rx0 and w[2] <= ry1
                  and w[3] <= rx1}
        assert local == inside  # the engine's grid on the region is the global grid there
        reach = {w for w in global_windows if w[0] < y1 + halo and w[2] > y0 - halo
                 and w[1] < x1 + halo and w[3] > x0 - halo}
        assert reach <= inside  # every window a core pixel (or its halo) uses is there
    assert (cover == 1).all()


@pytest.mark.parametrize("compressed", [False, True], ids=["memmap", "zarr"])
def test_lazy_16bit_tiff_tiled_equals_untiled(tmp_path, model_args, compressed):
    rng = np.random.default_rng(0)
    image = (scene(7, (70, 60))[..., 0].astype(np.uint16) * 200 + 1000
             + rng.integers(0, 50, (70, 60)).astype(np.uint16))
    path = tmp_path / "gray16.tif"
    kwargs = {"compression": "zlib", "tile": (16, 16)} if compressed else {}
    tifffile.imwrite(path, image, **kwargs)
    with open_image(path) as source:
        assert isinstance(source.data._data, np.memmap) != compressed
        # whole-image contrast: the same conversion for every region
        assert source.contrast_limits() == (float(image.min()), float(image.max()))
    assert _segment(path, tmp_path / "whole", model_args, "--tile-size", "0") == EXIT_OK
    assert _segment(path, tmp_path / "tiled", model_args, "--tile-size", "32") == EXIT_OK
    whole, _ = io.read_labels(tmp_path / "whole" / "gray16")
    tiled, _ = io.read_labels(tmp_path / "tiled" / "gray16")
    np.testing.assert_array_equal(tiled, whole)


def test_channel_first_tiff_reads_like_rgb(tmp_path):
    rgb = scene(8, (20, 24))
    tifffile.imwrite(tmp_path / "yxs.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "cyx.tif", np.moveaxis(rgb, -1, 0), photometric="minisblack",
                     metadata={"axes": "CYX"})
    with open_image(tmp_path / "yxs.tif") as a, open_image(tmp_path / "cyx.tif") as b:
        np.testing.assert_array_equal(a.read(), rgb)
        np.testing.assert_array_equal(b.read((2, 3, 10, 20)), rgb[2:10, 3:20])
