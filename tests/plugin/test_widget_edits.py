"""Human edits are owned by the person: re-runs and live updates rewrite every machine-owned
pixel and never a human-owned one; "replace all" is explicit and undoable; ownership follows
undo/redo; class and threshold edits re-label from cached embeddings without a ViT pass."""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipseg.labels_layer import EDITS_KEY, table_labels
from tests.plugin.conftest import reference

CLASSES = "cat\ngrass\nsky"


@pytest.fixture
def segmented(viewer_widget):
    """A viewer with image "photo" segmented once and its labels layer."""
    viewer, widget = viewer_widget
    image = np.random.default_rng(5).random((40, 56, 3), dtype=np.float32)
    viewer.add_image(image, name="photo", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    widget.live_box.setChecked(False)  # the tests below say when they want live updates
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


def edit(layer):
    """Paint a stroke with "sky" (3), erase a block, fill a region with "cat" (1), as napari's
    tools do (each a history item). Returns what the person's edits changed, as a mask."""
    before = layer.data.copy()
    layer.brush_size = 3
    with layer.block_history():  # one stroke
        for x in range(4, 30, 2):
            layer.paint((5, x), 3)
    with layer.block_history():  # the eraser: paints 0
        for y in range(24, 34, 2):
            for x in range(34, 50, 2):
                layer.paint((y, x), 0)
    y, x = np.argwhere(layer.data[:, :20] == 2)[-1]  # fill a "grass" region
    layer.fill((int(y), int(x)), 1)
    return layer.data != before


def tracker(widget, layer):
    return widget.ownership.tracker(layer, create=False)


def assert_owned(layer, edited, human, expected_machine):
    """Pixel by pixel: human-owned pixels hold the edits, the others the machine's result."""
    np.testing.assert_array_equal(layer.metadata[EDITS_KEY], human)
    np.testing.assert_array_equal(layer.data[human], edited[human])
    np.testing.assert_array_equal(layer.data[~human], expected_machine[~human])


def test_paint_erase_fill_are_the_persons(segmented):
    _viewer, widget, _image, layer = segmented
    first = layer.data.copy()
    changed = edit(layer)
    assert changed.sum() > 100 and (layer.data[changed] == 0).any()  # erasures included
    np.testing.assert_array_equal(tracker(widget, layer).human, changed)
    np.testing.assert_array_equal(tracker(widget, layer).machine, first)
    assert layer.metadata[EDITS_KEY] is tracker(widget, layer).human  # what the writer saves


@pytest.mark.parametrize("classes, options, lut", [
    ("cat\nsky", {}, [0, 1, 3]),                               # a class removed
    ("cat\ngrass\nsky\ntree", {}, [0, 1, 2, 3, 4]),            # a class added
    (CLASSES, {"threshold": 0.5}, [0, 1, 2, 3]),               # the threshold raised
])
def test_rerun_rewrites_machine_pixels_and_keeps_human_ones(segmented, tiny_loaded, classes,
                                                            options, lut):
    _viewer, widget, image, layer = segmented
    human = edit(layer)
    edited = layer.data.copy()
    widget.classes.set_text(classes)
    widget.settings.threshold.setValue(options.get("threshold", 0.0))
    widget.run_blocking()  # default mode: keep my edits
    ref = reference(tiny_loaded, image, classes, **options)
    expected = np.asarray(lut, np.uint8)[ref.labels]
    assert (expected[~human] != edited[~human]).sum() > 50  # the machine's part really moved
    assert_owned(layer, edited, human, expected)
    if "threshold" in options:
        assert (layer.data[~human] == 0).sum() > 50  # unlabeled pixels appeared
    if classes.endswith("tree"):
        assert (layer.data == 4).any() and table_labels(layer)[4] == "tree"
    if "grass" not in classes:  # removed, and only kept where the person painted it
        assert set(np.unique(layer.data[layer.data == 2])) <= {2}
        assert ((layer.data == 2) <= human).all()


def test_a_removed_class_nobody_painted_leaves_the_table(segmented):
    _viewer, widget, _image, layer = segmented
    widget.classes.set_text("cat\nsky")
    widget.run_blocking()
    assert not (layer.data == 2).any()
    assert table_labels(layer) == {1: "cat", 3: "sky"}
    widget.classes.set_text("cat\nsky\ngrass")  # re-added: its old label and color
    widget.run_blocking()
    assert table_labels(layer) == {1: "cat", 2: "grass", 3: "sky"}


def test_live_updates_follow_class_and_threshold_edits_without_a_vit_pass(
        segmented, tiny_loaded, qtbot):
    _viewer, widget, image, layer = segmented
    human = edit(layer)
    edited = layer.data.copy()
    steps = [("cat\nsky", 0.0, {}, [0, 1, 3]),
             ("cat\nsky\ntree", 0.0, {}, [0, 1, 3, 4]),
             ("cat\nsky\ntree", 0.45, {}, [0, 1, 3, 4]),
             ("cat\nsky\ntree", 0.45, {"sky": 0.9}, [0, 1, 3, 4])]
    expected = [np.asarray(lut, np.uint8)[reference(tiny_loaded, image, classes,
                                                    threshold=threshold,
                                                    class_thresholds=overrides).labels]
                for classes, threshold, overrides, lut in steps]  # before counting passes
    widget.live.delay_ms = 20
    widget.live_box.setChecked(True)
    passes = ViTPasses(tiny_loaded)
    try:
        for step, (classes, threshold, overrides, _lut) in enumerate(steps, 1):
            widget.classes.set_text(classes)
            widget.settings.threshold.setValue(threshold)
            for name, value in overrides.items():
                widget.classes.set_threshold(name, value)
            qtbot.waitUntil(lambda s=step: widget.live.updates >= s and widget.worker is None,
                            timeout=20000)
            assert_owned(layer, edited, human, expected[step - 1])
            assert widget.status.text().removeprefix("<span>").startswith("Updated live")
    finally:
        passes.close()
    assert passes.count == 0
    assert widget.live.updates == 4  # several edits in a row made one update each step


def test_live_updates_can_be_switched_off(segmented, qtbot):
    _viewer, widget, _image, layer = segmented
    before = layer.data.copy()
    widget.live.delay_ms = 10
    widget.classes.set_text("cat\nsky")  # live_box is off in the fixture
    qtbot.wait(200)
    assert widget.live.updates == 0 and widget.worker is None
    np.testing.assert_array_equal(layer.data, before)


def test_undo_redo_carry_ownership_across_runs(segmented, tiny_loaded):
    _viewer, widget, image, layer = segmented
    first = layer.data.copy()
    human = edit(layer)
    edited = layer.data.copy()
    widget.classes.set_text("cat\nsky")
    widget.run_blocking()
    rerun = layer.data.copy()
    own = tracker(widget, layer)
    layer.undo()  # the re-run
    np.testing.assert_array_equal(layer.data, edited)
    np.testing.assert_array_equal(own.human, human)
    np.testing.assert_array_equal(own.machine[~human], first[~human])
    layer.undo()  # the fill, then the eraser, then the stroke
    layer.undo()
    layer.undo()
    np.testing.assert_array_equal(layer.data, first)
    assert not own.human.any()
    layer.redo()
    layer.redo()
    layer.redo()
    layer.redo()
    np.testing.assert_array_equal(layer.data, rerun)
    np.testing.assert_array_equal(own.human, human)
    # undo the edits only: a re-run now takes those pixels too (they are the machine's again)
    layer.undo()
    layer.undo()
    layer.undo()
    layer.undo()
    layer.undo()
    assert not own.human.any()
    widget.classes.set_text("sky\ngrass")
    widget.run_blocking()
    ref = reference(tiny_loaded, image, "sky\ngrass")
    np.testing.assert_array_equal(layer.data, np.array([0, 3, 2], np.uint8)[ref.labels])


def test_replace_all_is_explicit_and_undoable(segmented, tiny_loaded):
    _viewer, widget, image, layer = segmented
    human = edit(layer)
    edited = layer.data.copy()
    widget.classes.set_text("cat\nsky")
    widget.mode.setCurrentText("replace all")
    widget.run_blocking()
    ref = reference(tiny_loaded, image, "cat\nsky")
    np.testing.assert_array_equal(layer.data, np.array([0, 1, 3], np.uint8)[ref.labels])
    assert not layer.metadata[EDITS_KEY].any()
    assert "replace all" in widget.status.text() and "Ctrl+Z" in widget.status.text()
    layer.undo()  # one step brings the edits back, and they are the person's again
    np.testing.assert_array_equal(layer.data, edited)
    np.testing.assert_array_equal(layer.metadata[EDITS_KEY], human)
    widget.mode.setCurrentText("keep my edits")
    widget.run_blocking()
    assert_owned(layer, edited, human, np.array([0, 1, 3], np.uint8)[ref.labels])


def test_new_layer_mode_keeps_the_old_layer(segmented):
    viewer, widget, _image, layer = segmented
    widget.mode.setCurrentText("new layer")
    new = widget.run_blocking()
    assert new.name != layer.name and layer.name in viewer.layers
    np.testing.assert_array_equal(new.data, layer.data)
    assert not new.metadata[EDITS_KEY].any()


def test_edits_outside_napari_history_are_kept_too(segmented):
    _viewer, widget, _image, layer = segmented
    layer.data[0:4, 0:4] = layer.data[0:4, 0:4] % 3 + 1  # a script writing the array itself
    layer.refresh()
    scripted = layer.data[0:4, 0:4].copy()
    widget.classes.set_text("grass\ncat")
    widget.run_blocking()
    np.testing.assert_array_equal(layer.data[0:4, 0:4], scripted)
    assert "outside napari's tools" in widget.status.text()


def test_a_layer_without_an_edit_record_keeps_its_labels(viewer_widget):
    viewer, widget = viewer_widget
    image = np.random.default_rng(6).random((32, 40, 3), dtype=np.float32)
    viewer.add_image(image, name="photo", contrast_limits=(0.0, 1.0))
    hand = np.zeros((32, 40), np.uint8)
    hand[3:9, 4:12] = 2
    viewer.add_labels(hand.copy(), name="photo labels")  # made by hand: no record of edits
    widget.set_layer("photo")
    widget.classes.set_text(CLASSES)
    layer = widget.run_blocking()
    assert layer.unique_id == viewer.layers["photo labels"].unique_id
    assert (layer.data[3:9, 4:12] == 2).all()
    assert (layer.data != 0).sum() > (hand != 0).sum()  # the rest was drafted
    assert "no record of your edits" in widget.status.text()


def test_threshold_change_relabels_without_a_vit_pass(segmented, tiny_loaded):
    _viewer, widget, image, layer = segmented
    passes = ViTPasses(tiny_loaded)
    try:
        widget.settings.threshold.setValue(0.4)
        widget.classes.set_threshold("grass", 0.9)
        widget.run_blocking()
    finally:
        passes.close()
    assert passes.count == 0
    assert "cached embeddings" in widget.status.text()
    ref = reference(tiny_loaded, image, CLASSES, threshold=0.4, class_thresholds={"grass": 0.9})
    np.testing.assert_array_equal(layer.data, ref.labels)
    assert (layer.data == 0).any()  # thresholds really took effect


def test_edited_pixels_force_a_new_vit_pass(segmented, tiny_loaded):
    viewer, widget, image, layer = segmented
    viewer.layers["photo"].data = image[::-1].copy()  # same layer, new pixels
    passes = ViTPasses(tiny_loaded)
    try:
        widget.run_blocking()
    finally:
        passes.close()
    assert passes.count > 0
    ref = reference(tiny_loaded, image[::-1].copy(), CLASSES)
    np.testing.assert_array_equal(layer.data, ref.labels)


def test_a_duplicated_layer_gets_its_own_edit_record(segmented):
    viewer, widget, _image, layer = segmented
    human = edit(layer)
    data, meta, _ = viewer.layers[layer.name].as_layer_data_tuple()
    copy = viewer.add_labels(data.copy(), **{**meta, "name": "copy"})  # as Duplicate Layer does
    assert copy.metadata[EDITS_KEY] is not layer.metadata[EDITS_KEY]
    np.testing.assert_array_equal(copy.metadata[EDITS_KEY], human)
    copy.paint((20, 20), 3)
    np.testing.assert_array_equal(layer.metadata[EDITS_KEY], human)  # untouched
