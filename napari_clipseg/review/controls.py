"""The review widget's fixed controls: the folders box, the navigation box and the shortcuts.

These hold no review state: :class:`~napari_clipseg.review.panel.ReviewWidget` connects their
buttons and fills their labels. :data:`SHORTCUTS` is the one list of the review's keys; the
panel shows it, binds it (:func:`bind_keys`) and the docs list the same keys.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

__all__ = ["SHORTCUTS", "FoldersBox", "NavigationBox", "ShortcutsBox", "bind_keys",
           "unbind_keys"]

#: The review's keyboard shortcuts (napari key names) -> (action, what it does). None of them
#: is one of napari's own keys (tests/plugin/test_review.py checks napari's keymaps at run time).
SHORTCUTS: dict[str, tuple[str, str]] = {
    "N": ("accept_next", "accept & next: save as reviewed, open the next image"),
    "Shift-N": ("previous", "previous image (your edits are saved first)"),
    "Shift-S": ("skip", "skip: record 'skipped', open the next image"),
    "Shift-R": ("run", "segment this image again with the class list (keeps your edits)"),
    "G": ("next_class", "paint with the next class"),
    "Shift-G": ("previous_class", "paint with the previous class"),
    "H": ("toggle_draft", "show / hide the draft"),
}


class FoldersBox(QGroupBox):
    """The image folder, the drafts folder (each with a browse button), "subfolders" and Open."""

    def __init__(self) -> None:
        super().__init__("Folders")
        self.images_edit = QLineEdit()
        self.images_edit.setPlaceholderText("folder of images")
        self.drafts_edit = QLineEdit()
        self.drafts_edit.setPlaceholderText("folder `clipseg batch -o` wrote")
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("List the images (names only) and open the first one "
                                    "neither reviewed nor skipped")
        self.recursive = QCheckBox("include subfolders")
        self.recursive.setChecked(True)
        self.recursive.setToolTip("Also review the images in subfolders, as `clipseg batch` "
                                  "drafts them (untick for `clipseg batch --no-recursive`)")
        form = QFormLayout(self)
        for label, edit in (("images", self.images_edit), ("drafts", self.drafts_edit)):
            browse = QPushButton("…")
            browse.clicked.connect(lambda _checked=False, e=edit: self._browse(e))
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(browse)
            form.addRow(label, row)
        form.addRow("", self.recursive)
        form.addRow("", self.open_button)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)


class NavigationBox(QGroupBox):
    """The progress count, the image shown, Previous / Skip / Accept & next and the jump box."""

    def __init__(self) -> None:
        super().__init__("Review")
        self.progress = QLabel("No folder open.")
        self.progress.setWordWrap(True)
        self.where = QLabel("")
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.previous_button = QPushButton("Previous")
        self.previous_button.setToolTip("The previous image (Shift+N); edits are saved first")
        self.skip_button = QPushButton("Skip")
        self.skip_button.setToolTip("Record 'skipped' and open the next image (Shift+S)")
        self.accept_button = QPushButton("Accept && next")
        self.accept_button.setToolTip("Save as reviewed and open the next image (N)")
        self.jump_edit = QLineEdit()
        self.jump_edit.setPlaceholderText("position or name")
        self.jump_edit.setToolTip("Jump to an image: its position (1..N) or (part of) its name")
        self.jump_button = QPushButton("Go")
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addWidget(self.where)
        buttons = QHBoxLayout()
        for b in (self.previous_button, self.skip_button, self.accept_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        jump = QHBoxLayout()
        jump.addWidget(QLabel("jump to"))
        jump.addWidget(self.jump_edit, 1)
        jump.addWidget(self.jump_button)
        layout.addLayout(jump)


class ShortcutsBox(QGroupBox):
    """The list of :data:`SHORTCUTS`, as the person presses them."""

    def __init__(self) -> None:
        super().__init__("Shortcuts (in the viewer)")
        keys = "<br>".join(f"<b>{html.escape(k.replace('-', '+'))}</b>: {html.escape(text)}"
                           for k, (_a, text) in SHORTCUTS.items())
        self.label = QLabel(keys)
        self.label.setWordWrap(True)
        QVBoxLayout(self).addWidget(self.label)


def bind_keys(viewer: Any, actions: Mapping[str, Callable[[], None]]
              ) -> tuple[list[str], list[str]]:
    """Bind every key of :data:`SHORTCUTS` on ``viewer`` to its action in ``actions``.

    Returns ``(bound, refused)``: a key another plugin holds already is left to it.
    """
    bound, refused = [], []
    for key, (action, _text) in SHORTCUTS.items():
        func = actions[action]

        def handler(_viewer: Any, func: Callable[[], None] = func) -> None:
            func()

        try:
            viewer.bind_key(key, handler)
        except ValueError:  # another plugin holds the key: ours is left out
            refused.append(key)
            continue
        bound.append(key)
    return bound, refused


def unbind_keys(viewer: Any, keys: list[str]) -> None:
    """Give ``keys`` back to the viewer."""
    for key in keys:
        try:
            viewer.bind_key(key, None)
        except (ValueError, KeyError):
            pass
