"""Re-runs respect human corrections; replace is undoable; class/threshold edits re-label
from cached embeddings without a ViT pass."""
from __future__ import annotations

import numpy as np
import pytest

from tests.plugin.conftest import reference

CLASSES = "cat\ngrass\nsky"


@pytest.fixture
def segmented(viewer_widget):
    """A viewer with image "photo" segmented once (fill mode) and its labels layer."""
    viewer, widget = viewer_widget
    image = np.random.default_rng(5).random((40, 56, 3), dtype=np.float32)
    viewer.add_image(image, name="photo", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    layer = widget.run_blocking()
    return viewer, widget, image, layer


class ViTPasses:
    """Counts forward calls of the patch embedding (one per ViT pass), via a scoped hook."""

    def __init__(self, loaded):
        self.count = 0
        self.handle = loaded.model.visual.conv1.register_forward_hook(self._hook)

    def _hook(self, *_args):
        self.count += 1

    def close(self):
        self.handle.remove()


def test_rerun_fills_only_unlabeled_pixels(segmented):
    viewer, widget, image, layer = segmented
    first = layer.data.copy()
    # the user corrects a block to "sky" (3) and erases another block to 0
    painted = (slice(2, 12), slice(3, 20))
    erased = (slice(25, 35), slice(30, 50))
    layer.data_setitem(tuple(np.nonzero(np.ones((10, 17)))[i] + (2, 3)[i] for i in range(2)), 3)
    layer.data_setitem(tuple(np.nonzero(np.ones((10, 20)))[i] + (25, 30)[i] for i in range(2)), 0)
    assert (layer.data[painted] == 3).all() and (layer.data[erased] == 0).all()
    widget.run_blocking()  # default mode: fill unlabeled
    # written in place: still one Labels layer
    assert [x.name for x in viewer.layers if x.name.startswith("photo labels")] == [layer.name]
    assert (layer.data[painted] == 3).all()  # the correction survived
    np.testing.assert_array_equal(layer.data[erased], first[erased])  # the hole was refilled
    outside = np.ones(first.shape, bool)
    outside[painted] = False
    np.testing.assert_array_equal(layer.data[outside], first[outside])


def test_replace_is_explicit_and_undoable(segmented):
    _viewer, widget, _image, layer = segmented
    first = layer.data.copy()
    ys, xs = np.nonzero(np.ones((10, 10)))
    layer.data_setitem((ys + 5, xs + 5), 3)
    corrected = layer.data.copy()
    assert not np.array_equal(corrected, first)
    widget.mode.setCurrentText("replace")
    widget.run_blocking()
    np.testing.assert_array_equal(layer.data, first)  # the correction is overwritten
    layer.undo()  # one undo step brings the whole correction back
    np.testing.assert_array_equal(layer.data, corrected)
    layer.redo()
    np.testing.assert_array_equal(layer.data, first)


def test_new_layer_mode_keeps_the_old_layer(segmented):
    viewer, widget, _image, layer = segmented
    widget.mode.setCurrentText("new layer")
    new = widget.run_blocking()
    assert new.name != layer.name and layer.name in viewer.layers
    np.testing.assert_array_equal(new.data, layer.data)


def test_threshold_change_relabels_without_a_vit_pass(segmented, tiny_loaded):
    _viewer, widget, image, layer = segmented
    passes = ViTPasses(tiny_loaded)
    try:
        widget.settings.threshold.setValue(0.4)
        widget.classes.set_threshold("grass", 0.9)
        widget.mode.setCurrentText("replace")
        widget.run_blocking()
    finally:
        passes.close()
    assert passes.count == 0
    assert "cached embeddings" in widget.status.text()
    ref = reference(tiny_loaded, image, CLASSES, threshold=0.4, class_thresholds={"grass": 0.9})
    np.testing.assert_array_equal(layer.data, ref.labels)
    assert (layer.data == 0).any()  # thresholds really took effect


def test_class_list_change_relabels_and_extends_the_class_table(segmented, tiny_loaded):
    _viewer, widget, image, layer = segmented
    passes = ViTPasses(tiny_loaded)
    try:
        widget.classes.set_text("sky\ntree")
        widget.mode.setCurrentText("replace")
        widget.run_blocking()
    finally:
        passes.close()
    assert passes.count == 0
    # "sky" keeps its label 3 and color; "tree" is appended as label 4
    assert list(layer.features["class"]) == ["unlabeled", "cat", "grass", "sky", "tree"]
    ref = reference(tiny_loaded, image, "sky\ntree")
    expected = np.array([0, 3, 4], dtype=np.uint8)[ref.labels]
    np.testing.assert_array_equal(layer.data, expected)


def test_edited_pixels_force_a_new_vit_pass(segmented, tiny_loaded):
    viewer, widget, image, layer = segmented
    viewer.layers["photo"].data = image[::-1].copy()  # same layer, new pixels
    passes = ViTPasses(tiny_loaded)
    try:
        widget.mode.setCurrentText("replace")
        widget.run_blocking()
    finally:
        passes.close()
    assert passes.count > 0
    ref = reference(tiny_loaded, image[::-1].copy(), CLASSES)
    np.testing.assert_array_equal(layer.data, ref.labels)
