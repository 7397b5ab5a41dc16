"""The rest of the annotation loop in a real viewer: the legend, saving and reopening a draft
with its edits, models (default, offline, cancel while loading), dropped runs, the pinned run
bar and the words the widget uses."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QTableWidget,
    QWidget,
)

from clipseg.errors import ModelLoadError
from napari_clipseg import model_choice
from napari_clipseg.job import Session
from napari_clipseg.labels_layer import EDITS_KEY, table_labels
from napari_clipseg.messages import CODE_LIKE, for_gui
from tests.plugin.conftest import TINY, reference
from tests.plugin.test_widget_edits import edit

CLASSES = "cat\ngrass\nsky"


def _photo(viewer, shape=(40, 56), seed=5, name="photo"):
    image = np.random.default_rng(seed).random((*shape, 3), dtype=np.float32)
    viewer.add_image(image, name=name, contrast_limits=(0.0, 1.0))
    return image


@pytest.fixture
def segmented(viewer_widget):
    viewer, widget = viewer_widget
    image = _photo(viewer)
    widget.classes.set_text(CLASSES)
    widget.live_box.setChecked(False)
    layer = widget.run_blocking()
    return viewer, widget, image, layer


def _same(a, b):
    return a is not None and b is not None and a.unique_id == b.unique_id


# -- the legend -----------------------------------------------------------------------------------
def test_legend_lists_classes_and_a_click_selects_the_label_for_painting(segmented, qtbot):
    viewer, widget, _image, layer = segmented
    legend = widget.legend
    names = [legend.table.item(r, 1).text() for r in range(legend.table.rowCount())]
    assert names == ["cat", "grass", "sky"]
    counts = np.bincount(layer.data.ravel(), minlength=4)
    shown = [int(legend.table.item(r, 3).text().replace(",", "")) for r in range(3)]
    assert shown == counts[1:].tolist()
    viewer.layers.selection.active = viewer.layers["photo"]
    item = legend.table.item(legend.row_of("sky"), 1)
    qtbot.mouseClick(legend.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=legend.table.visualItemRect(item).center())
    assert layer.selected_label == 3 and layer.mode == "paint"
    assert _same(viewer.layers.selection.active, layer)


def test_legend_rename_and_recolour_update_the_layer_and_the_class_list(segmented,
                                                                       tiny_loaded):
    _viewer, widget, image, layer = segmented
    legend = widget.legend
    legend.table.item(legend.row_of("sky"), 1).setText("heaven")  # as typed in the cell
    assert table_labels(layer) == {1: "cat", 2: "grass", 3: "heaven"}
    assert widget.classes.class_names() == ["cat", "grass", "heaven"]
    status = layer.get_status((0, 0), world=False)["value"]
    assert ("heaven" in status) == (layer.data[0, 0] == 3)
    legend.set_color(3, "#123456")
    np.testing.assert_allclose(layer.colormap.color_dict[3][:3],
                               np.array([0x12, 0x34, 0x56]) / 255, atol=1e-6)
    widget.run_blocking()  # the renamed class keeps its label (and its colour)
    assert table_labels(layer) == {1: "cat", 2: "grass", 3: "heaven"}
    np.testing.assert_allclose(layer.colormap.color_dict[3][:3],
                               np.array([0x12, 0x34, 0x56]) / 255, atol=1e-6)
    ref = reference(tiny_loaded, image, "cat\ngrass\nheaven")
    np.testing.assert_array_equal(layer.data, ref.labels)
    legend.rename(1, "grass")  # a name another label has: refused, nothing changes
    assert "already called" in legend.message.text() and table_labels(layer)[1] == "cat"


def test_legend_drops_a_class_that_is_neither_listed_nor_painted(segmented):
    _viewer, widget, _image, layer = segmented
    layer.paint((3, 3), 2)  # a person paints "grass"
    widget.classes.set_text("cat\nsky")
    widget.run_blocking()
    assert table_labels(layer) == {1: "cat", 2: "grass", 3: "sky"}  # still painted
    layer.mode = "paint"
    layer.data_setitem(tuple(np.nonzero(layer.data == 2)), 0)  # the person erases it all
    widget.legend.refresh()
    assert table_labels(layer) == {1: "cat", 3: "sky"}
    assert widget.legend.table.rowCount() == 2
    layer.undo()  # the grass pixels come back, and so does its name
    widget.legend.refresh()
    assert table_labels(layer)[2] == "grass"


# -- saving -------------------------------------------------------------------------------------
def test_save_and_reopen_keeps_who_set_each_pixel(segmented, tiny_loaded, tmp_path):
    viewer, widget, image, layer = segmented
    human = edit(layer)
    edited = layer.data.copy()
    viewer.layers.selection = {viewer.layers[layer.name]}
    paths = viewer.layers.save(str(tmp_path / "scene.png"), selected=True,
                               plugin="napari-clipseg")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "scene.clipseg.json", "scene.edits.png", "scene.png"]
    viewer.layers.remove(layer.name)
    [back] = viewer.open(str(tmp_path / "scene.png"), plugin="napari-clipseg")
    np.testing.assert_array_equal(np.asarray(back.data), edited)
    np.testing.assert_array_equal(back.metadata[EDITS_KEY], human)
    back.name = "photo labels"  # the draft of "photo" again
    widget.classes.set_text("sky\ncat")
    widget.run_blocking()
    ref = reference(tiny_loaded, image, "sky\ncat")
    expected = np.array([0, 3, 1], np.uint8)[ref.labels]
    np.testing.assert_array_equal(back.data[human], edited[human])
    np.testing.assert_array_equal(back.data[~human], expected[~human])
    assert "no record" not in widget.status.text()


# -- models -------------------------------------------------------------------------------------
def test_default_model_is_the_best_that_can_load_and_the_toy_is_marked(viewer_widget,
                                                                       monkeypatch):
    _viewer, widget = viewer_widget
    box = widget.settings.model
    texts = {box.itemData(i): box.itemText(i) for i in range(box.count())}
    assert texts["clipseg-demo-tiny"].endswith("(toy)")
    assert "download needed" in texts["ViT-B-16/openai"]  # nothing is cached in the tests
    from napari_clipseg.settings_panel import SettingsPanel, default_model

    assert default_model() == "clipseg-demo-tiny"
    fresh = SettingsPanel()
    assert fresh.model_name() == "clipseg-demo-tiny"
    monkeypatch.setattr(model_choice, "available", lambda name, checkpoint=None:
                        name == "ViT-L-14/openai")
    assert default_model() == "ViT-L-14/openai"  # a cached real model wins over the toy
    widget.settings.set_model("clipseg-demo-tiny")
    assert "toy demo model" in widget.status.text()


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9", "http://10.255.255.1:81"])
def test_a_model_that_cannot_be_had_fails_within_3_seconds(viewer_widget, monkeypatch, qtbot,
                                                          endpoint):
    viewer, widget = viewer_widget
    if endpoint is not None:  # downloads allowed, but the server does not answer
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    _photo(viewer)
    widget.classes.set_text(CLASSES)
    widget.settings.set_model("ViT-B-16/openai")
    start = time.perf_counter()
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10000)
    assert time.perf_counter() - start < 3.0
    text = widget.status.text()
    assert "not on this computer" in text and "checkpoint" in text and "internet" in text
    assert not CODE_LIKE.search(text.replace("<span style='color:#e06c75'>", ""))
    assert "photo labels" not in viewer.layers


def test_cancel_during_model_load_ends_at_once(viewer_widget, tiny_loaded, qtbot):
    viewer, widget = viewer_widget
    _photo(viewer)
    widget.classes.set_text(CLASSES)
    release, calls = threading.Event(), []

    def slow_loader(config):
        calls.append(config.model)
        release.wait(30)  # a download that takes its time
        return tiny_loaded

    widget.session = Session(loader=slow_loader)
    widget.settings.set_model("ViT-B-16/openai")
    widget.settings.short_side.setValue(0)
    try:
        widget.run()
        qtbot.waitUntil(lambda: "loading the model" in widget.status.text(), timeout=5000)
        start = time.perf_counter()
        widget.cancel()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
        assert time.perf_counter() - start < 1.0
        assert "cancelled" in widget.status.text() and widget.run_button.isEnabled()
        assert "photo labels" not in viewer.layers
    finally:
        release.set()
    widget.run()  # the load finished in the background: the next run uses it
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    assert calls == ["ViT-B-16/openai"] and "photo labels" in viewer.layers


# -- dropped runs -------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["delete", "reshape"])
def test_a_run_whose_image_went_away_is_dropped(viewer_widget, qtbot, change):
    viewer, widget = viewer_widget
    _photo(viewer, shape=(96, 128), name="big")
    widget.classes.set_text(CLASSES)
    widget.settings.batch_size.setValue(1)
    done = []

    def on_step(step):
        if step.stage == "windows" and not done:
            done.append(step)
            if change == "delete":
                viewer.layers.remove("big")
            else:
                viewer.layers["big"].data = np.zeros((20, 20, 3), np.float32)

    widget.progressed.connect(on_step)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    assert done and "big labels" not in viewer.layers
    text = widget.status.text()
    assert "dropped" in text and "nothing was written" in text
    assert ("deleted" if change == "delete" else "changed shape") in text


# -- layout and words ---------------------------------------------------------------------------
def test_run_bar_stays_visible_with_a_long_panel(viewer_widget, qtbot):
    _viewer, widget = viewer_widget
    widget.classes.set_text("\n".join(f"class {i}" for i in range(30)))
    widget.settings.advanced.expand(animate=False)
    widget.setParent(None)  # on its own, the height of a small dock
    widget.resize(420, 600)
    widget.show()
    qtbot.waitExposed(widget)
    assert widget.body.sizeHint().height() > widget.height()  # the settings scroll
    for w in (widget.run_button, widget.cancel_button, widget.progress, widget.status):
        assert w.isVisible()
        bottom = w.mapTo(widget, w.rect().bottomLeft()).y()
        assert bottom <= widget.height()
    assert not widget._scroll.isAncestorOf(widget.run_button)


def test_every_control_has_a_tooltip_in_plain_words(viewer_widget):
    viewer, widget = viewer_widget
    _photo(viewer)
    widget.classes.set_text(CLASSES)
    widget.run_blocking()
    missing, code = [], []
    kinds = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QPlainTextEdit,
             QTableWidget)
    for w in widget.findChildren(QWidget):
        if not isinstance(w, kinds) or isinstance(w.parent(), (QAbstractSpinBox, QComboBox)):
            continue  # the line edit inside a spin box or combo box is the box itself
        if w.objectName().startswith("qt_"):
            continue  # Qt's own parts
        tip = w.toolTip()
        if not tip.strip():
            missing.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}")
        elif CODE_LIKE.search(tip):
            code.append(tip)
    assert not missing, missing
    assert not code, code


def test_engine_messages_become_plain_words():
    engine = ModelLoadError(
        "model 'ViT-B-16/openai': the weights for pretrained tag 'openai' of ViT-B-16 are not "
        "in the cache (~/.cache) and could not be downloaded (offline? set HF_HUB_OFFLINE=1). "
        "Either connect once, or point at a local weights file: ModelConfig(checkpoint=PATH), "
        "`clipseg ... --checkpoint PATH`, or the widget's checkpoint field.")
    assert CODE_LIKE.search(str(engine))
    text = for_gui(engine, "ViT-B-16/openai")
    assert not CODE_LIKE.search(text) and "ViT-B-16/openai" in text
    mismatch = ModelLoadError("checkpoint 'w.pt' does not fit the architecture: x. Pass the "
                              "matching model name (e.g. model='ViT-L-14/openai').")
    assert not CODE_LIKE.search(for_gui(mismatch, TINY))
