"""The class-list editor alone (no viewer): files, parsing messages, per-class thresholds."""
from __future__ import annotations

import pytest

from clipseg.errors import InvalidInputError
from napari_clipseg.classes_panel import ClassesPanel


@pytest.fixture
def panel(qtbot):
    widget = ClassesPanel()
    qtbot.addWidget(widget)
    return widget


def test_load_and_save_a_class_list(panel, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("# my classes\nroad; street\n\n  tree  \nsky\n", encoding="utf-8")
    panel.load_file(source)
    assert panel.class_text() == "road; street\ntree\nsky"
    assert panel.class_names() == ["road", "tree", "sky"]
    panel.save_file(tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "road; street\ntree\nsky\n"


def test_thresholds_follow_class_names_across_edits(panel):
    panel.set_text("cat\ndog")
    assert panel.thresholds() == {}
    panel.set_threshold("dog", 0.35)
    panel.set_text("bird\ndog\ncat")  # dog keeps its override, bird starts at "global"
    assert panel.thresholds() == {"dog": 0.35}
    panel.set_threshold("dog", None)
    assert panel.thresholds() == {}
    with pytest.raises(InvalidInputError, match="listed classes"):
        panel.set_threshold("fish", 0.2)


def test_invalid_text_shows_the_engine_message_and_keeps_the_table(panel):
    panel.set_text("cat\ndog")
    panel.set_text("cat\nCat")
    assert "distinct names" in panel.message.text()
    assert panel.table.rowCount() == 2  # last valid table kept while the text is invalid
    panel.set_text("cat\ndog; puppy")
    assert panel.message.text() == ""


def test_suggested_classes(panel):
    assert not panel.suggest_button.isEnabled()
    panel.set_suggested(["nucleus", "background"])
    panel.suggest_button.click()
    assert panel.class_names() == ["nucleus", "background"]
