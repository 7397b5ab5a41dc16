"""The widget in a real viewer: a run, threads, cancel, the result layer and its class table."""
from __future__ import annotations

import numpy as np
import pytest

from clipseg.formats.io import class_colors, hex_to_rgb
from napari_clipseg.labels_layer import known_classes
from napari_clipseg.widget import ClipSegWidget
from tests.plugin.conftest import reference

CLASSES = "cat; kitten\ngrass\nsky"
NAMES = ["cat", "grass", "sky"]


def _image(seed: int = 0, shape=(40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, 3), dtype=np.float32)


def test_widget_opens_through_the_manifest(viewer_widget):
    viewer, widget = viewer_widget
    assert isinstance(widget, ClipSegWidget)
    viewer.add_image(_image(), name="photo")  # the layer picker follows the viewer
    assert widget.layer_combo.currentText() == "photo"
    # the model box lists the registry and the injected model
    from clipseg.models import list_models

    box = widget.settings.model
    items = [box.itemData(i) for i in range(box.count())]
    assert set(list_models()) <= set(items) and "tiny (test)" in items


def test_threaded_run_makes_a_class_named_labels_layer(viewer_widget, tiny_loaded, qtbot):
    viewer, widget = viewer_widget
    image = _image()
    viewer.add_image(image, name="photo", scale=(0.5, 2.0), translate=(3.0, -4.0),
                     contrast_limits=(0.0, 1.0))
    widget.set_layer("photo")
    widget.classes.set_text(CLASSES)
    steps = []
    widget.progressed.connect(steps.append)
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)  # the finished slot ran
    assert widget.worker is None and widget.run_button.isEnabled()
    layer = viewer.layers["photo labels"]
    ref = reference(tiny_loaded, image, CLASSES)
    assert layer.data.shape == (40, 56) and layer.data.dtype == np.uint8
    np.testing.assert_array_equal(layer.data, ref.labels)
    assert list(layer.features["class"]) == ["unlabeled", *NAMES]
    assert list(layer.features["index"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(layer.scale, (0.5, 2.0))
    np.testing.assert_allclose(layer.translate, (3.0, -4.0))
    for k, color in enumerate(class_colors(3)):
        expected = np.array([*hex_to_rgb(color), 255]) / 255.0
        np.testing.assert_allclose(layer.colormap.color_dict[k + 1], expected, atol=1e-6)
    assert layer.colormap.color_dict[0][3] == 0  # unlabeled is transparent
    # the engine's window batches came through as progress, in order
    windows = [s for s in steps if s.stage == "windows"]
    assert windows and windows[-1].done == windows[-1].total
    assert [s.done for s in windows] == sorted(s.done for s in windows)
    # hovering a pixel shows its class name in the status bar
    y, x = np.argwhere(layer.data == 2)[0]
    status = layer.get_status((int(y), int(x)), world=False)
    assert "grass" in status["value"]
    assert known_classes(layer)[1] == ("cat", ["cat", "kitten"])


def test_cancel_mid_run_leaves_the_viewer_unchanged(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(_image(1, (128, 192)), name="big")
    widget.set_layer("big")
    widget.classes.set_text(CLASSES)
    widget.settings.batch_size.setValue(1)  # many window batches, so there is a "mid"
    before = [layer.name for layer in viewer.layers]
    seen = []

    def on_step(step):
        seen.append(step)
        if step.stage == "windows":
            widget.cancel()

    widget.progressed.connect(on_step)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)  # the finished slot ran
    windows = [s for s in seen if s.stage == "windows"]
    assert windows and windows[-1].done < windows[-1].total  # it stopped early
    assert [layer.name for layer in viewer.layers] == before
    assert "cancelled" in widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert not widget.session.can_relabel(widget.make_request())


def test_score_layers_hold_the_engine_probabilities(viewer_widget, tiny_loaded):
    viewer, widget = viewer_widget
    image = _image(2)
    viewer.add_image(image, name="photo", contrast_limits=(0.0, 1.0))
    widget.classes.set_text(CLASSES)
    widget.scores.setChecked(True)
    widget.run_blocking()
    ref = reference(tiny_loaded, image, CLASSES)
    for k, name in enumerate(NAMES):
        layer = viewer.layers[f"photo score: {name}"]
        np.testing.assert_allclose(layer.data, ref.probs[k], atol=1e-6)


@pytest.mark.parametrize("classes, expected",
                         [("", "at least one class"), ("cat\ncat", "distinct names")])
def test_bad_class_list_gives_a_message_not_a_layer(viewer_widget, classes, expected):
    viewer, widget = viewer_widget
    viewer.add_image(_image(), name="photo")
    widget.classes.set_text(classes)
    assert widget.run_blocking() is None
    assert widget.run() is None  # refused before any thread starts
    assert expected in widget.status.text().lower()
    assert "photo labels" not in viewer.layers


def test_no_image_layer_is_a_clear_message(viewer_widget):
    _viewer, widget = viewer_widget
    widget.classes.set_text(CLASSES)
    assert widget.run_blocking() is None
    assert "no image to segment" in widget.status.text().lower()


def test_missing_weights_become_a_message(viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    viewer.add_image(_image(), name="photo")
    widget.classes.set_text(CLASSES)
    widget.settings.set_model("ViT-B-16/openai")
    widget.settings.checkpoint.setText(str(tmp_path / "missing.safetensors"))
    assert widget.run_blocking() is None
    assert "missing.safetensors" in widget.status.text()
    assert "photo labels" not in viewer.layers


def test_threaded_failure_is_a_notification_and_the_widget_recovers(viewer_widget, qtbot):
    from napari.utils.notifications import notification_manager

    viewer, widget = viewer_widget
    viewer.add_image(_image(), name="photo")
    widget.classes.set_text(CLASSES)
    widget.settings.set_model("ViT-B-16/openai")
    widget.settings.checkpoint.setText("/nonexistent/weights.safetensors")
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        assert widget.run() is not None
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert any("weights.safetensors" in str(n.message) for n in seen)
    assert widget.run_button.isEnabled() and widget.worker is None
    assert "photo labels" not in viewer.layers


def test_layer_picker_follows_renames_and_removals(viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(_image(), name="a")
    viewer.add_image(_image(1), name="b")
    widget.set_layer("a")
    viewer.layers["a"].name = "renamed"
    items = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert sorted(items) == ["b", "renamed"]
    viewer.layers.remove("b")
    assert [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())] == [
        "renamed"]


def test_status_shows_names_with_ampersands_as_typed(viewer_widget):
    from qtpy.QtGui import QTextDocument

    viewer, widget = viewer_widget
    viewer.add_image(_image(3), name="R&D scan", contrast_limits=(0.0, 1.0))
    widget.set_layer("R&D scan")
    widget.classes.set_text(CLASSES)
    widget.run_blocking()
    text = widget.status.text()  # a QLabel shows text without markup as it is, escapes too
    doc = QTextDocument()
    doc.setHtml(text)
    shown = doc.toPlainText() if text.lstrip().startswith("<") else text
    assert "'R&D scan labels'" in shown and "&amp;" not in shown, shown
