"""The "Review a dataset" widget in a real viewer (Xvfb): walk 5 batch drafts, correct, save,
resume; merged class lists, shape mismatch, read-only drafts, images without a draft, keys."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from clipseg.formats import io
from clipseg.formats.review import DRAFT, REVIEWED, review_state
from tests.plugin.test_review_series import CLASSES, N_IMAGES, dataset, pristine  # noqa: F401

REVIEW = "Review a dataset"


@pytest.fixture
def open_review(make_napari_viewer, qtbot):
    """``open_review(images, drafts, **kw) -> (viewer, widget)``, opened through napari.yaml,
    waited until its first image is shown."""
    viewer = make_napari_viewer()

    def _open(images, drafts, **kwargs):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipseg", REVIEW)
        widget.open_folders(images, drafts, **kwargs)
        settle(qtbot, widget)
        return viewer, widget

    return _open


def settle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(widget.idle, timeout=timeout)


def press(viewer, key):
    """Run what ``key`` is bound to in the viewer's keymap (as a key press would)."""
    from napari.utils.key_bindings import KeyBinding

    viewer.keymap[KeyBinding.from_str(key)](viewer)


def test_walk_correct_save_and_resume(dataset, open_review, qtbot):  # noqa: F811
    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    assert w.index == 0 and w.series.writable
    draft0, _ = io.read_labels(drafts / "s0")
    np.testing.assert_array_equal(w.labels_layer.data, draft0)
    np.testing.assert_array_equal(w.image_layer.data, np.asarray(Image.open(images / "s0.png")))
    assert "0 of 5 reviewed" in w.progress.text()
    assert 1 in w.jobs.cache, "the next image is prepared while the person works"

    # correct s0 with a brush stroke (napari's history: the edit tracker sees it)
    layer = w.labels_layer
    layer.brush_size = 7
    layer.paint((10, 10), 2)
    corrected0, mine0 = layer.data.copy(), w.tracker.human.copy()
    assert mine0.any()
    press(viewer, "N")  # accept & next
    settle(qtbot, w)
    assert w.index == 1 and "1 of 5 reviewed" in w.progress.text()
    press(viewer, "N")  # s1 accepted as it is
    settle(qtbot, w)
    assert w.index == 2

    # correct s2, go back (its edits are saved as a draft), come back by jumping
    layer = w.labels_layer
    layer.brush_size = 5
    layer.selected_label = 1
    layer.paint((40, 30), 1)
    corrected2, mine2 = layer.data.copy(), w.tracker.human.copy()
    press(viewer, "Shift-N")
    settle(qtbot, w)
    assert w.index == 1
    back2, meta2 = io.read_labels(drafts / "s2")
    np.testing.assert_array_equal(back2, corrected2)
    assert review_state(meta2) == DRAFT  # moving away saves the edits, not a verdict
    w.jump("3")
    settle(qtbot, w)
    assert w.index == 2
    np.testing.assert_array_equal(w.labels_layer.data, corrected2)
    np.testing.assert_array_equal(w.labels_layer.metadata["clipseg_edits"], mine2)
    w.accept_next()
    settle(qtbot, w)
    assert w.index == 3 and "3 of 5 reviewed" in w.progress.text()

    for name, labels, mine in (("s0", corrected0, mine0), ("s2", corrected2, mine2)):
        saved, meta = io.read_labels(drafts / name)
        np.testing.assert_array_equal(saved, labels)
        np.testing.assert_array_equal(meta["edits"], mine)
        assert review_state(meta) == REVIEWED
    saved1, meta1 = io.read_labels(drafts / "s1")
    assert review_state(meta1) == REVIEWED and meta1["edits"] is None

    # close the widget: its keys go back; a new one resumes at the first unreviewed image
    from napari.utils.key_bindings import KeyBinding

    viewer.window.remove_dock_widget(w)
    assert KeyBinding.from_str("N") not in viewer.keymap
    _viewer, again = open_review(images, drafts)
    assert again.index == 3 and again.series[3].name == "s3.png"
    qtbot.waitUntil(lambda: "3 of 5 reviewed" in again.progress.text(), timeout=10_000)


def test_skip_and_keys_for_classes_and_visibility(dataset, open_review, qtbot):  # noqa: F811
    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    layer = w.labels_layer
    layer.selected_label = 1
    press(viewer, "G")
    assert layer.selected_label == 2 and layer.mode == "paint"
    press(viewer, "Shift-G")
    press(viewer, "Shift-G")
    assert layer.selected_label == len(w.series.table)  # wraps around
    press(viewer, "H")
    assert not layer.visible
    press(viewer, "H")
    assert layer.visible
    press(viewer, "Shift-S")
    settle(qtbot, w)
    assert w.index == 1
    assert review_state(io.read_sidecar(drafts / "s0")) == "skipped"
    assert "skipped" in w.progress.text()


def test_shortcuts_do_not_clash_with_napari_keys(make_napari_viewer):
    """Against napari's own keymaps as this napari version defines them at run time."""
    from napari._app_model import get_app_model
    from napari.components import ViewerModel
    from napari.layers import Image as ImageLayer
    from napari.layers import Labels, Points, Shapes, Surface, Tracks, Vectors
    from napari.utils.key_bindings import KeyBinding
    from napari.utils.shortcuts import default_shortcuts

    from napari_clipseg.review.controls import SHORTCUTS

    make_napari_viewer()  # registers the app-model (menu) keybindings
    taken: dict[str, str] = {}
    for action, bindings in default_shortcuts.items():
        for b in bindings:
            taken[str(KeyBinding.from_str(str(b)))] = action
    for cls in (ViewerModel, Labels, ImageLayer, Points, Shapes, Surface, Tracks, Vectors):
        for b in cls.class_keymap:
            taken[str(KeyBinding.from_str(str(b)))] = f"{cls.__name__} keymap"
    for entry in get_app_model().keybindings:
        taken[str(KeyBinding.from_str(str(entry.keybinding)))] = entry.command_id
    assert len(taken) > 50, "napari's keymaps were not found"
    assert "P" in taken and "Ctrl+Z" in taken  # the Labels keys are among them
    ours = {str(KeyBinding.from_str(k)): k for k in SHORTCUTS}
    clashes = {k: taken[k] for k in ours if k in taken}
    assert not clashes, clashes
    assert len(ours) == len(SHORTCUTS)


def test_real_key_presses_on_the_canvas_drive_the_review_and_typing_in_the_panel_does_not(
        dataset, open_review, qtbot):  # noqa: F811
    """Qt key events, as a person's keyboard sends them: on the canvas they are the review's
    shortcuts; typed into the panel's jump box they are text, never an accept."""
    from qtpy.QtCore import Qt

    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    viewer.window._qt_window.show()
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_N)  # accept & next
    settle(qtbot, w)
    assert w.index == 1
    assert review_state(io.read_sidecar(io.sidecar_path(drafts / "s0"))) == REVIEWED
    qtbot.keyClick(canvas, Qt.Key.Key_H)  # hide the draft
    assert not w.labels_layer.visible
    qtbot.keyClick(canvas, Qt.Key.Key_H)
    assert w.labels_layer.visible
    w.labels_layer.selected_label = 1
    qtbot.keyClick(canvas, Qt.Key.Key_G)  # paint with the next class
    assert w.labels_layer.selected_label == 2 and w.labels_layer.mode == "paint"
    qtbot.keyClick(canvas, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)  # previous
    settle(qtbot, w)
    assert w.index == 0

    w.jump_edit.setFocus()
    qtbot.keyClicks(w.jump_edit, "nN")
    settle(qtbot, w)
    assert w.jump_edit.text() == "nN" and w.index == 0, "typing is not a shortcut"
    assert review_state(io.read_sidecar(io.sidecar_path(drafts / "s1"))) == DRAFT


def test_shortcuts_are_listed_in_the_panel(dataset, open_review):  # noqa: F811
    from napari_clipseg.review.controls import SHORTCUTS

    _viewer, w = open_review(*dataset)
    text = w.shortcuts.text()
    for key in SHORTCUTS:
        assert key.replace("-", "+") in text


def test_mixed_class_lists_are_merged_with_a_warning(dataset, open_review, qtbot):  # noqa: F811
    images, drafts = dataset
    labels, meta = io.read_labels(drafts / "s1")
    names = [c["name"] for c in meta["classes"]]
    order = [names[3], "yellow circle", names[0], names[1], names[2]]
    remap = np.array([0] + [order.index(n) + 1 for n in names])
    io.write_labels(drafts / "s1", remap[labels].astype(np.uint8), order, model=meta["model"],
                    config=meta["config"], image_info=meta["image"])
    viewer, w = open_review(images, drafts)
    qtbot.waitUntil(lambda: not w._scan_timer.isActive(), timeout=10_000)
    assert "yellow circle" in w.warning.text() and "remapped by name" in w.warning.text()
    w.accept_next()
    settle(qtbot, w)
    assert w.index == 1
    np.testing.assert_array_equal(w.labels_layer.data, labels)  # by name, not by number
    assert list(w.labels_layer.features["class"])[1:] == names + ["yellow circle"]
    assert "yellow circle" in w.class_text()


def test_a_draft_of_another_shape_is_skipped_with_a_message(dataset, open_review,  # noqa: F811
                                                            qtbot):
    images, drafts = dataset
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "s1.png")
    viewer, w = open_review(images, drafts)
    w.accept_next()
    settle(qtbot, w)
    assert w.index == 2
    assert "s1.png" in w.warning.text() and "40x50" in w.warning.text()
    w.previous()
    settle(qtbot, w)
    assert w.index == 0  # skipped going back as well
    side = io.read_sidecar(drafts / "s1")
    assert review_state(side) == DRAFT  # the broken draft is left as it was


def test_read_only_drafts_folder_is_reported_before_any_edit(dataset, open_review,  # noqa: F811
                                                             qtbot):
    images, drafts = dataset
    before = {p.name: p.read_bytes() for p in drafts.iterdir()}
    os.chmod(drafts, 0o555)
    try:
        # as root the mode bits do not stop a write: the probe then reads them instead
        probe = None if os.geteuid() != 0 else (lambda p: os.stat(p).st_mode & 0o222 != 0)
        viewer, w = open_review(images, drafts, writable=probe)
        assert "read-only" in w.banner.text() and w.banner.isVisibleTo(w)
        assert not w.accept_button.isEnabled() and not w.skip_button.isEnabled()
        assert not w.run_button.isEnabled(), "a run's result could not be saved either"
        assert not w.labels_layer.editable  # no correction can be made, so none is lost
        press(viewer, "N")
        settle(qtbot, w)
        assert w.index == 0 and "read-only" in w.status.text()
    finally:
        os.chmod(drafts, 0o755)
    assert {p.name: p.read_bytes() for p in drafts.iterdir()} == before


def test_images_without_a_draft_are_segmented_on_arrival(dataset, open_review,  # noqa: F811
                                                         qtbot):
    images, drafts = dataset
    batch1, _ = io.read_labels(drafts / "s1")
    batch4, _ = io.read_labels(drafts / "s4")
    for name in ("s1", "s4"):
        for f in drafts.glob(f"{name}.*"):
            f.unlink()
    viewer, w = open_review(images, drafts)
    assert w.jobs.cache[1].segmented is not None, "the next image's segmentation is prefetched"
    w.accept_next()
    settle(qtbot, w)
    assert w.index == 1
    # the same labels `clipseg batch` wrote for it: same model, options and classes
    np.testing.assert_array_equal(w.labels_layer.data, batch1)
    w.jump("s4")
    settle(qtbot, w)
    assert w.index == 4 and "segmented" in w.status.text()
    np.testing.assert_array_equal(w.labels_layer.data, batch4)
    w.accept_next()
    settle(qtbot, w)
    saved, meta = io.read_labels(drafts / "s4")
    np.testing.assert_array_equal(saved, batch4)
    assert review_state(meta) == REVIEWED and meta["model"] == "clipseg-demo-tiny"
    assert [c["name"] for c in meta["classes"]] == [c.strip() for c in CLASSES.split(",")]


def test_run_keeps_the_persons_pixels(dataset, open_review, qtbot):  # noqa: F811
    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    layer = w.labels_layer
    layer.brush_size = 5
    layer.paint((20, 20), 3)
    mine = w.tracker.human.copy()
    painted = layer.data[mine].copy()
    layer.data_setitem((np.array([0]), np.array([0])), 0)  # stray change, no tool used
    press(viewer, "Shift-R")
    settle(qtbot, w)
    np.testing.assert_array_equal(layer.data[mine], painted)
    assert w.tracker.human.sum() >= mine.sum()
    assert N_IMAGES == len(w.series)


def test_instances_of_thing_classes_follow_corrections_and_are_saved(dataset, open_review,  # noqa: F811
                                                                     qtbot):
    import tifffile

    from clipseg.instances import instance_map, labels_digest

    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    assert w.instances_layer is None  # no class is a thing yet
    assert list(w.things) == w.series.table.names
    layer = w.labels_layer
    present = [int(v) for v in np.unique(layer.data) if v > 0]
    thing = w.series.table.names[present[0] - 1]
    w.things[thing].setChecked(True)
    inst = w.instances_layer
    assert inst is not None and inst in viewer.layers
    np.testing.assert_array_equal(inst.data > 0, layer.data == present[0])
    # a correction: a new blob of the thing class, far from the others; the layer follows
    layer.data_setitem((np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])), 0)
    layer.brush_size = 3
    layer.paint((60, 60), present[0])
    qtbot.waitUntil(lambda: np.array_equal(inst.data > 0, layer.data == present[0]),
                    timeout=5_000)
    corrected = layer.data.copy()
    w.min_area.setValue(2)
    w.accept_next()
    settle(qtbot, w)
    saved, meta = io.read_labels(drafts / "s0")
    np.testing.assert_array_equal(saved, corrected)
    entry = meta["instances"]
    assert entry["classes"] == [thing] and entry["min_area"] == 2 and not entry["watershed"]
    assert entry["labels_sha256"] == labels_digest(saved)
    objects = tifffile.imread(drafts / entry["file"])
    expected, _owner = instance_map(corrected, [present[0]], min_area=2)
    np.testing.assert_array_equal(objects, expected)
    assert entry["count"] == int(expected.max()) >= 1
    # the choice carries on to the next image
    assert w.index == 1 and w.things[thing].isChecked()


def test_opening_another_folder_while_the_next_image_is_prepared(dataset, open_review,  # noqa: F811
                                                                 qtbot, tmp_path):
    images, drafts = dataset
    viewer, w = open_review(images, drafts)
    w.show_image(3)  # a job in flight
    other = tmp_path / "other"
    other.mkdir()
    for name in ("s1.png", "s2.png"):
        (other / name).write_bytes((images / name).read_bytes())
    assert w.open_folders(other, drafts)
    settle(qtbot, w)
    assert len(w.series) == 2 and w.index == 0 and w.labels_layer is not None
    assert [layer.name for layer in viewer.layers] == ["s1.png", "s1 draft"]


def test_subfolders_are_reviewed_where_the_batch_drafted_them(tmp_path, open_review, qtbot):
    from tests.plugin.test_review_series import batch_drafts, make_images

    images, drafts = tmp_path / "images", tmp_path / "drafts"
    make_images(images, 1)
    make_images(images / "plate2", 2)
    batch_drafts(images, drafts)  # walks subfolders by default: drafts/plate2/s0.png ...
    viewer, w = open_review(images, drafts)
    assert w.recursive.isChecked()
    assert [i.name for i in w.series.items] == ["plate2/s0.png", "plate2/s1.png", "s0.png"]
    draft, _ = io.read_labels(drafts / "plate2" / "s0")
    np.testing.assert_array_equal(w.labels_layer.data, draft)
    layer = w.labels_layer
    layer.brush_size = 5
    layer.paint((20, 20), 2)
    corrected = layer.data.copy()
    press(viewer, "N")
    settle(qtbot, w)
    assert w.index == 1
    back, meta = io.read_labels(drafts / "plate2" / "s0")
    np.testing.assert_array_equal(back, corrected)
    assert review_state(meta) == REVIEWED
    assert not (drafts / "s0.edits.png").exists(), "the top-level s0 is another image"

    # unticked: the top level only, as `clipseg batch --no-recursive` drafts it
    w.recursive.setChecked(False)
    w._open_clicked()
    settle(qtbot, w)
    assert [i.name for i in w.series.items] == ["s0.png"]


def _shown(label) -> str:
    """A QLabel's text as a person reads it (rich text rendered)."""
    from qtpy.QtGui import QTextDocument

    text = label.text()  # a QLabel shows text without markup as it is, escapes too
    doc = QTextDocument()
    doc.setHtml(text)
    return doc.toPlainText() if text.lstrip().startswith("<") else text


def test_status_lines_read_right_and_the_end_says_what_comes_next(dataset, open_review,  # noqa: F811
                                                                  qtbot):
    images, drafts = dataset
    _viewer, w = open_review(images, drafts)
    assert "then Accept & next" in _shown(w.status), _shown(w.status)
    assert "&amp;" not in _shown(w.status)
    assert "No drafts" not in _shown(w.warning)  # the batch's drafts are there
    # the last image accepted while others are left: the status names the first of them
    w.jump(str(N_IMAGES))
    settle(qtbot, w)
    w.accept_next()
    settle(qtbot, w)
    shown = _shown(w.status)
    assert "That was the last image" in shown and "s0.png (jump to 1)" in shown, shown
    assert "reviewed already" in shown  # the last image stays shown, with its new state
    w.jump("1")
    settle(qtbot, w)
    for _ in range(N_IMAGES - 1):
        w.accept_next()
        settle(qtbot, w)
    assert w.index == N_IMAGES - 1
    w.accept_next()
    settle(qtbot, w)
    shown = _shown(w.status)
    assert f"{N_IMAGES} of {N_IMAGES} reviewed" in shown and "clipseg export" in shown, shown


def test_open_with_empty_fields_or_an_empty_drafts_folder_says_so(dataset, open_review,  # noqa: F811
                                                                  tmp_path, qtbot):
    images, drafts = dataset
    _viewer, w = open_review("", "")
    assert w.series is None
    assert "Choose an images folder and a drafts folder" in _shown(w.status)
    assert not w.open_folders(images, "")
    assert "Choose a drafts folder" in _shown(w.status)
    w.set_class_text("red circle\nblue square; blue box\nstripes")
    assert w.open_folders(images, tmp_path / "new-drafts")
    settle(qtbot, w)
    shown = _shown(w.warning)  # the warnings line stays while images are segmented
    assert "No drafts in" in shown and "segmented when it opens" in shown, shown


def test_the_class_box_shows_the_drafts_synonyms(dataset, open_review, qtbot):  # noqa: F811
    images, drafts = dataset
    labels, meta = io.read_labels(drafts / "s0")
    names = [c["name"] for c in sorted(meta["classes"], key=lambda c: c["label"])]
    synonyms = [[n] for n in names]
    synonyms[2] = [names[2], "striped"]
    for name in [f"s{i}" for i in range(N_IMAGES)]:
        lab, m = io.read_labels(drafts / name)
        io.write_labels(drafts / name, lab, names, synonyms=synonyms, model=m["model"],
                        config=m["config"], image_info=m["image"])
    _viewer, w = open_review(images, drafts)
    qtbot.waitUntil(lambda: not w._scan_timer.isActive(), timeout=10_000)
    lines = w.class_text().splitlines()
    assert lines[2] == f"{names[2]}; striped" and lines[0] == names[0]
    from clipseg.text import parse_classes

    parsed = parse_classes(w.class_text())
    assert [c.name for c in parsed] == names and list(parsed[2].synonyms)[-1] == "striped"


def test_jump_finds_images_in_subfolders_by_their_file_name(tmp_path):
    from napari_clipseg.review.series import ReviewSeries

    images = tmp_path / "images"
    for name in ("plate1/a.png", "plate1/b.png", "plate2/a.png", "plate2/zz_last.png"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(b"")
    series = ReviewSeries(images, tmp_path / "drafts")
    assert series.find("b") == 1 and series.find("b.png") == 1
    assert series.find("zz") == 3 and series.find("plate2/a") == 2
    with pytest.raises(Exception, match="matches 2 images.*plate1/a.png, plate2/a.png"):
        series.find("a.png")
