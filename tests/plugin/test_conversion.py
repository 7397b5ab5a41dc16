"""Layer conversion without a viewer: planes, channels, multiscale levels, class tables, writes."""
from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from clipseg.errors import InvalidInputError
from napari_clipseg.image_source import combined_source, image_source, parse_channels
from napari_clipseg.labels_layer import EDITS_KEY, merge_classes
from napari_clipseg.ownership import EditTracker


@pytest.mark.parametrize("text, expected", [("", None), ("2", (2, 2, 2)), ("0, 1", (0, 1, None)),
                                            ("2,0,1", (2, 0, 1)), ("-, 3, none", (None, 3, None))])
def test_parse_channels(text, expected):
    assert parse_channels(text) == expected


@pytest.mark.parametrize("text", ["a", "0,1,2,3", "-1", "-, -"])
def test_parse_channels_rejects(text):
    with pytest.raises(InvalidInputError, match="channel indices"):
        parse_channels(text)


def test_world_point_picks_the_plane_through_scale_and_translate():
    layer = Image(np.zeros((5, 20, 24), np.float32), scale=(2.0, 1.0, 1.0),
                  translate=(10.0, 0.0, 0.0))
    # world z = 10 + 2 * index  ->  z = 14 is plane 2; a 4-D viewer point uses its last 3 axes
    src = image_source(layer, (7.0, 14.0, 3.0, 3.0))
    assert src.current == (2,) and src.plane_axes == (0,)
    assert src.label_shape == (5, 20, 24) and src.all_planes() == [(i,) for i in range(5)]
    assert src.scale == (2.0, 1.0, 1.0) and src.translate == (10.0, 0.0, 0.0)


def test_rgb_layer_plane_is_its_rgb_image():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 12, 16, 3), dtype=np.uint8)
    layer = Image(rgb, rgb=True)
    src = image_source(layer, (1.0, 0.0, 0.0))
    assert src.label_shape == (2, 12, 16) and src.current == (1,)
    np.testing.assert_allclose(src.read_plane((1,)), rgb[1] / 255.0, atol=1e-6)


def test_multiscale_reads_the_coarsest_level_that_keeps_the_short_side():
    base = np.random.default_rng(1).random((64, 96), dtype=np.float32)
    layer = Image([base, base[::2, ::2], base[::4, ::4]], multiscale=True,
                  contrast_limits=(0, 1))
    src = image_source(layer, (0.0, 0.0), short_side=30)
    assert src.level == 1 and src.label_shape == (32, 48)
    assert src.scale == (2.0, 2.0)  # the labels still cover the full-resolution extent
    np.testing.assert_allclose(src.read_plane(())[..., 0], base[::2, ::2], atol=1e-6)
    assert image_source(layer, (0.0, 0.0), short_side=None).level == 0


def test_non_image_and_complex_inputs_are_refused():
    with pytest.raises(InvalidInputError, match="Image layer"):
        image_source(Labels(np.zeros((4, 4), np.uint8)), (0, 0))
    with pytest.raises(InvalidInputError, match="channel axis"):
        image_source(Image(np.zeros((3, 8, 8), np.float32)), (0, 0, 0), channel_axis=1)


def test_merge_classes_keeps_labels_and_never_reuses_one():
    known = {1: ("cat", ["cat"]), 2: ("grass", ["grass"]), 3: ("sky", ["sky"])}
    merged, lut = merge_classes(known, ["sky", "tree", "cat"])
    assert merged[4] == ("tree", ["tree"]) and lut.tolist() == [0, 3, 4, 1]
    # a label painted by hand (7) is not taken by a new class
    merged, lut = merge_classes(known, ["road"], in_use_max=7)
    assert lut.tolist() == [0, 8]


def _stack_layer():
    """A 2-plane Labels layer tracked from birth (as the widget makes them)."""
    data = np.zeros((2, 4, 4), np.uint8)
    return Labels(data, metadata={EDITS_KEY: np.zeros(data.shape, bool)})


def test_machine_writes_per_plane_keep_human_pixels_and_undo_as_one_step():
    layer = _stack_layer()
    own = EditTracker(layer)
    with own.machine_write() as w:
        w.write_plane((1,), np.full((4, 4), 1, np.uint8))
    layer.paint((1, 0, 0), 7)      # a person, on plane 1 (brush size 10 covers the plane)
    human = own.human.copy()
    assert human[1].all() and not human[0].any()
    layer.brush_size = 1
    with layer.block_history():
        layer.paint((1, 2, 2), 0)  # erased by the person...
        layer.paint((1, 2, 2), 7)  # ...and painted back within the same stroke
    new = np.full((4, 4), 2, np.uint8)
    with own.machine_write() as w:
        w.write_plane((1,), new)
        w.write_plane((0,), new)
    assert w.report.kept == 16 and w.report.written == 16
    assert (layer.data[1] == 7).all() and (layer.data[0] == 2).all()
    with own.machine_write() as w:
        w.write_plane((1,), new, replace=True)
    assert w.report.released == 16 and not own.human.any()
    np.testing.assert_array_equal(layer.data[1], new)
    layer.undo()                   # the replace: pixels and ownership come back
    assert (layer.data[1] == 7).all()
    np.testing.assert_array_equal(own.human, human)
    layer.undo()                   # the stroke changed nothing overall; then the re-run
    layer.undo()
    assert not layer.data[0].any()
    layer.undo()                   # the person's paint
    assert not own.human.any() and (layer.data[1] == 1).all()
    layer.redo()
    np.testing.assert_array_equal(own.human, human)


def test_machine_write_refuses_labels_the_dtype_cannot_hold():
    layer = _stack_layer()
    own = EditTracker(layer)
    with pytest.raises(InvalidInputError, match="hold values up to 255"):
        with own.machine_write() as w:
            w.write_plane((0,), np.full((4, 4), 300, np.uint16))


def test_a_short_last_axis_can_be_the_channel_axis():
    data = np.random.default_rng(2).random((12, 16, 4), dtype=np.float32)
    layer = Image(data, contrast_limits=(0, 1))  # not RGB: 4 channels of fluorescence
    src = image_source(layer, (0.0, 0.0, 0.0), channel_axis=2, channels=(3, 0, 1))
    assert src.label_shape == (12, 16) and src.plane_axes == ()
    np.testing.assert_allclose(src.read_plane(()), data[..., [3, 0, 1]], atol=1e-6)


def test_single_channel_layers_combine_into_rgb_each_with_its_contrast():
    rng = np.random.default_rng(3)
    red = Image(rng.integers(0, 4096, (10, 12)).astype(np.uint16), contrast_limits=(0, 4095))
    blue = Image(rng.random((10, 12), dtype=np.float32) * 2, contrast_limits=(0, 2))
    src = combined_source([red, None, blue], (0.0, 0.0))
    plane = src.read_plane(())
    np.testing.assert_allclose(plane[..., 0], red.data / 4095, atol=1e-6)
    assert not plane[..., 1].any()
    np.testing.assert_allclose(plane[..., 2], blue.data / 2, atol=1e-6)
    with pytest.raises(InvalidInputError, match="one shape"):
        combined_source([red, Image(np.zeros((5, 5), np.float32))], (0.0, 0.0))
