"""Layer conversion without a viewer: planes, channels, multiscale levels, class tables, writes."""
from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from clipseg.errors import InvalidInputError
from napari_clipseg.image_source import image_source, parse_channels
from napari_clipseg.labels_layer import merge_class_names, write_plane


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


def test_merge_class_names_keeps_existing_labels():
    names, lut = merge_class_names(["cat", "grass", "sky"], ["sky", "tree", "cat"])
    assert names == ["cat", "grass", "sky", "tree"]
    assert lut.tolist() == [0, 3, 4, 1]


def test_write_plane_fill_and_replace():
    layer = Labels(np.zeros((2, 4, 4), np.uint8))
    layer.data[1, 0, :] = 7  # a hand-painted row on plane 1
    new = np.full((4, 4), 2, np.uint8)
    new[3, 3] = 0
    assert write_plane(layer, (1,), new, replace=False) == 16 - 4 - 1
    assert (layer.data[1, 0] == 7).all() and layer.data[1, 3, 3] == 0
    assert (layer.data[1, 1:3] == 2).all() and not layer.data[0].any()
    assert write_plane(layer, (1,), new, replace=True) == 4 + 0  # only the painted row changed
    np.testing.assert_array_equal(layer.data[1], new)
    layer.undo()
    assert (layer.data[1, 0] == 7).all()


def test_write_plane_refuses_labels_the_dtype_cannot_hold():
    layer = Labels(np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidInputError, match="holds labels up to 255"):
        write_plane(layer, (), np.full((4, 4), 300, np.uint16), replace=True)
