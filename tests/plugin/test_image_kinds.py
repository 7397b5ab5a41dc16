"""Image kinds through the widget: 3-D stacks (current plane / all planes), 16-bit with contrast
limits, multichannel with a channel axis, and dask arrays read lazily (one plane)."""
from __future__ import annotations

import dask.array as da
import numpy as np

from clipseg.image import as_rgb01
from tests.plugin.conftest import reference

CLASSES = "cell\nbackground"


def test_current_plane_of_a_stack(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    stack = np.random.default_rng(0).random((3, 32, 40), dtype=np.float32)
    viewer.add_image(stack, name="stack", contrast_limits=(0.0, 1.0), scale=(2.0, 0.5, 0.5))
    widget.classes.set_text(CLASSES)
    widget.image.as_planes.click()  # 3 planes, not 3 channels
    viewer.dims.set_current_step(0, 2)
    layer = widget.run_blocking()
    assert layer.data.shape == (3, 32, 40)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    ref = reference(tiny_loaded, as_rgb01(stack[2], contrast_limits=(0, 1)), CLASSES)
    np.testing.assert_array_equal(layer.data[2], ref.labels)
    assert not layer.data[:2].any()  # other planes untouched


def test_all_planes_of_a_stack_report_progress_per_plane(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    stack = np.random.default_rng(1).random((2, 32, 40), dtype=np.float32)
    viewer.add_image(stack, name="stack", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    widget.image.as_planes.click()
    widget.planes.setCurrentText("all planes")
    layer = widget.run_blocking()
    for z in range(2):
        ref = reference(tiny_loaded, as_rgb01(stack[z], contrast_limits=(0, 1)), CLASSES)
        np.testing.assert_array_equal(layer.data[z], ref.labels)
    assert "plane(s)" in widget.status.text() and "2 plane" in widget.status.text()


def test_16_bit_image_is_normalised_by_its_contrast_limits(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    image = np.random.default_rng(2).integers(0, 4096, (36, 44), dtype=np.uint16)
    viewer.add_image(image, name="u16", contrast_limits=(500, 3000))
    widget.classes.set_text(CLASSES)
    layer = widget.run_blocking()
    ref = reference(tiny_loaded, as_rgb01(image, contrast_limits=(500, 3000)), CLASSES)
    np.testing.assert_array_equal(layer.data, ref.labels)
    # different limits give a different input: the widget really follows the layer's limits
    other = reference(tiny_loaded, as_rgb01(image, contrast_limits=(0, 4095)), CLASSES)
    assert not np.allclose(ref.probs, other.probs)


def test_multichannel_stack_maps_chosen_channels_to_rgb(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    data = np.random.default_rng(3).random((4, 30, 36), dtype=np.float32)
    viewer.add_image(data, name="channels", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(0))
    widget.channels.setText("3, 0, -")
    layer = widget.run_blocking()
    assert layer.data.shape == (30, 36)  # the channel axis is gone from the labels
    expected = as_rgb01(data, channel_axis=0, channels=(3, 0, None), contrast_limits=(0, 1))
    ref = reference(tiny_loaded, expected, CLASSES)
    np.testing.assert_array_equal(layer.data, ref.labels)
    # the new labels layer did not reset the channel choice for the next run
    assert widget.channel_axis.currentData() == 0 and widget.channels.text() == "3, 0, -"


def test_dask_stack_is_read_one_plane_at_a_time(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    planes = np.random.default_rng(4).random((4, 32, 32), dtype=np.float32)
    computed = []

    def load(block_info=None):
        z = block_info[None]["chunk-location"][0]
        computed.append(z)
        return planes[z:z + 1]

    lazy = da.map_blocks(load, dtype=np.float32, chunks=((1,) * 4, (32,), (32,)))
    viewer.add_image(lazy, name="lazy", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    widget.image.as_planes.click()
    viewer.dims.set_current_step(0, 1)
    computed.clear()  # napari itself reads the displayed plane
    layer = widget.run_blocking()
    assert set(computed) == {1}  # only the plane being segmented was computed
    assert isinstance(layer.data, np.ndarray) and layer.data.shape == (4, 32, 32)
    ref = reference(tiny_loaded, as_rgb01(planes[1], contrast_limits=(0, 1)), CLASSES)
    np.testing.assert_array_equal(layer.data[1], ref.labels)


def test_bad_channel_choice_is_a_message(viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(np.zeros((2, 20, 20), np.float32), name="two", contrast_limits=(0, 1))
    widget.classes.set_text(CLASSES)
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(0))
    widget.channels.setText("0, 5")
    assert widget.run_blocking() is None
    assert "channel indices below 2" in widget.status.text()


def test_a_short_first_axis_asks_channels_or_planes(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    data = np.random.default_rng(7).random((3, 30, 36), dtype=np.float32)
    viewer.add_image(data, name="cyx", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    assert widget.image.question.isVisibleTo(widget)
    assert "3 channels" in widget.image.question_text.text()
    assert widget.run_blocking() is None  # never a silent guess
    assert "3 channels (colours, stains) or 3 planes" in widget.status.text()
    assert "cyx labels" not in viewer.layers
    widget.image.as_channels.click()  # the answer picks the channel axis
    assert widget.channel_axis.currentData() == 0
    assert not widget.image.question.isVisibleTo(widget)
    layer = widget.run_blocking()
    assert layer.data.shape == (30, 36)
    ref = reference(tiny_loaded, as_rgb01(data, channel_axis=0, contrast_limits=(0, 1)), CLASSES)
    np.testing.assert_array_equal(layer.data, ref.labels)


def test_a_short_last_axis_is_asked_about_too(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    data = np.random.default_rng(8).random((30, 36, 5), dtype=np.float32)
    viewer.add_image(data, name="yxc", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    assert "last axis" in widget.image.question_text.text()
    widget.image.as_channels.click()
    assert widget.channel_axis.currentData() == 2
    widget.channels.setText("4, 2, 0")
    layer = widget.run_blocking()
    assert layer.data.shape == (30, 36)
    expected = as_rgb01(data, channel_axis=-1, channels=(4, 2, 0), contrast_limits=(0, 1))
    np.testing.assert_array_equal(layer.data, reference(tiny_loaded, expected, CLASSES).labels)


def test_three_single_channel_layers_as_red_green_blue(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(9)
    chans = [rng.random((30, 36), dtype=np.float32) for _ in range(3)]
    for name, chan, top in zip(("nuclei", "actin", "membrane"), chans, (1.0, 0.5, 2.0)):
        viewer.add_image(chan * top, name=name, contrast_limits=(0.0, top))
    widget.classes.set_text(CLASSES)
    widget.image.set_rgb_layers("membrane", "nuclei", None)
    layer = widget.run_blocking()
    assert layer.name == "membrane+nuclei labels"
    expected = np.stack([chans[2], chans[0], np.zeros_like(chans[0])], axis=-1)
    np.testing.assert_array_equal(layer.data, reference(tiny_loaded, expected, CLASSES).labels)
