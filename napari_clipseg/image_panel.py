"""The "Image" part of the widget: which layer (or which three layers as R, G, B), its channels
and planes, and the question "channels or planes?" for a short first or last axis.

A non-RGB layer whose first (or last) axis has at most :data:`SHORT_AXIS` entries may hold
channels (a ``(C, Y, X)`` fluorescence image) or planes (a short Z-stack). Taking one for the
other gives silently wrong results, so until the person answers (or picks a channel axis) the
panel shows the question and Run refuses with a message pointing at it.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from clipseg.errors import InvalidInputError

from .image_source import ImageSource, combined_source, image_source, parse_channels

PLANE_MODES = ("current plane", "all planes")
#: An axis this short (first or last) raises the "channels or planes?" question.
SHORT_AXIS = 8
COLOURS = ("red", "green", "blue")
NONE = "none"


def _shape(layer: Any) -> tuple[int, ...]:
    return tuple(layer.level_shapes[0]) if layer.multiscale else tuple(layer.data.shape)


def short_axis(layer: Any) -> int | None:
    """The first (else last) axis of a non-RGB layer with at most SHORT_AXIS entries, or None."""
    if layer is None or layer.rgb or layer.ndim < 3:
        return None
    shape = _shape(layer)
    if shape[0] <= SHORT_AXIS:
        return 0
    if shape[-1] <= SHORT_AXIS:
        return layer.ndim - 1
    return None


class ImagePanel(QWidget):
    """Layer choice, channel axis and channels, planes, and the R, G, B combination.

    Signals
    -------
    changed : emitted when the chosen image (or how it is read) changes.
    """

    changed = Signal()

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._shown: tuple | None = None
        self._answers: dict[Any, str] = {}  # layer unique_id -> "planes"

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The image to segment")
        self.channel_axis = QComboBox()
        self.channel_axis.setToolTip("For an image whose channels (colours, stains) are stored "
                                     "along one axis: which axis that is. 'none' = the image "
                                     "has no channel axis")
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("r, g, b channel numbers, e.g. 2, 0, 1")
        self.channels.setToolTip("Which channels to show as red, green and blue, counted from "
                                 "0; one number gives gray; '-' leaves a colour black")
        self.planes = QComboBox()
        self.planes.addItems(list(PLANE_MODES))
        self.planes.setToolTip("Segment the plane shown in the viewer, or every plane of the "
                               "stack (with progress)")
        self.combine = QCheckBox("combine layers as R, G, B")
        self.combine.setToolTip("For a multichannel file napari opened as one layer per "
                                "channel: pick up to three of those layers and segment them "
                                "together as one colour image")
        self.rgb_combos = []
        rgb_row = QHBoxLayout()
        for colour in COLOURS:
            combo = QComboBox()
            combo.setToolTip(f"The layer shown as {colour} ('{NONE}' = black)")
            self.rgb_combos.append(combo)
            rgb_row.addWidget(combo)
            combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self.rgb_box = QWidget()
        self.rgb_box.setLayout(rgb_row)
        rgb_row.setContentsMargins(0, 0, 0, 0)
        self.rgb_box.setVisible(False)

        self.question = QFrame()
        self.question.setObjectName("clipsegQuestion")
        self.question.setStyleSheet("QFrame#clipsegQuestion { border: 1px solid #e5c07b; "
                                    "border-radius: 4px; }")
        self.question_text = QLabel("")
        self.question_text.setWordWrap(True)
        self.question_text.setStyleSheet("color: #e5c07b;")
        self.as_channels = QPushButton("channels")
        self.as_channels.setToolTip("The short axis holds channels: combine them into colours")
        self.as_planes = QPushButton("planes")
        self.as_planes.setToolTip("The short axis holds planes (Z or time): segment them one "
                                  "at a time")
        q_buttons = QHBoxLayout()
        q_buttons.addWidget(self.as_channels)
        q_buttons.addWidget(self.as_planes)
        q_layout = QVBoxLayout(self.question)
        q_layout.addWidget(self.question_text)
        q_layout.addLayout(q_buttons)
        self.question.setVisible(False)

        form = QFormLayout()
        form.addRow("layer", self.layer_combo)
        form.addRow("channel axis", self.channel_axis)
        form.addRow("channels → RGB", self.channels)
        form.addRow("planes", self.planes)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.question)
        layout.addLayout(form)
        layout.addWidget(self.combine)
        layout.addWidget(self.rgb_box)

        self.layer_combo.currentTextChanged.connect(self._on_layer)
        self.channel_axis.currentIndexChanged.connect(self._on_channel_axis)
        self.channels.textChanged.connect(lambda _t: self.changed.emit())
        self.combine.toggled.connect(self._on_combine)
        self.as_channels.clicked.connect(self._answer_channels)
        self.as_planes.clicked.connect(self._answer_planes)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        viewer.layers.events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    # -- layers --------------------------------------------------------------------------------
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def refresh(self, _event: Any = None) -> None:
        """Follow the viewer's layers (added, removed, renamed)."""
        layers = self._image_layers()
        names = [layer.name for layer in layers]
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        active = self.viewer.layers.selection.active
        if current in names:
            self.layer_combo.setCurrentText(current)
        elif active is not None and active.name in names:
            self.layer_combo.setCurrentText(active.name)
        self.layer_combo.blockSignals(False)
        singles = [layer.name for layer in layers if not layer.rgb and not layer.multiscale]
        for combo in self.rgb_combos:
            chosen = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([NONE, *singles])
            combo.setCurrentText(chosen if chosen in singles else NONE)
            combo.blockSignals(False)
        self._on_layer(self.layer_combo.currentText())

    def image_layer(self) -> Any | None:
        """The Image layer selected in the panel, or None."""
        name = self.layer_combo.currentText()
        return next((layer for layer in self._image_layers() if layer.name == name), None)

    def set_layer(self, name: str) -> None:
        """Select the Image layer ``name``."""
        self.layer_combo.setCurrentText(name)

    def set_rgb_layers(self, red: str | None, green: str | None = None,
                       blue: str | None = None) -> None:
        """Combine the named layers as R, G, B (None = black)."""
        self.combine.setChecked(True)
        for combo, name in zip(self.rgb_combos, (red, green, blue)):
            combo.setCurrentText(name or NONE)

    def _on_layer(self, _name: str) -> None:
        layer = self.image_layer()
        ident = None if layer is None else (layer.unique_id, layer.ndim, layer.rgb)
        if ident is not None and ident == self._shown:
            self._update_question()
            return  # same layer (other layers changed): keep the channel choices
        self._shown = ident
        self.channel_axis.blockSignals(True)
        self.channel_axis.clear()
        self.channel_axis.addItem(NONE, None)
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            shape = _shape(layer)
            for axis in range(layer.ndim - 2):
                self.channel_axis.addItem(f"axis {axis} ({shape[axis]})", axis)
            if shape[-1] <= SHORT_AXIS:
                self.channel_axis.addItem(f"last axis {layer.ndim - 1} ({shape[-1]})",
                                          layer.ndim - 1)
        self.channel_axis.blockSignals(False)
        self._on_combine(self.combine.isChecked())
        self._on_channel_axis()

    def _on_combine(self, on: bool) -> None:
        self.rgb_box.setVisible(on)
        layer = self.image_layer()
        self.layer_combo.setEnabled(not on)
        self.channel_axis.setEnabled(not on and self.channel_axis.count() > 1)
        stack = layer is not None and layer.ndim > 2
        if on:
            first = next((x for x in self._rgb_layers() if x is not None), None)
            stack = first is not None and first.ndim > 2
        self.planes.setEnabled(stack)
        self._on_channel_axis()

    def _on_channel_axis(self, _index: int = 0) -> None:
        has_axis = self.channel_axis.currentData() is not None and not self.combine.isChecked()
        self.channels.setEnabled(has_axis)
        if not has_axis:
            self.channels.clear()
        self._update_question()
        self.changed.emit()

    # -- the question --------------------------------------------------------------------------
    def pending_question(self) -> str | None:
        """The unanswered "channels or planes?" question about the chosen layer, or None."""
        layer = self.image_layer()
        axis = short_axis(layer)
        if (axis is None or self.combine.isChecked() or self.channel_axis.currentData()
                is not None or self._answers.get(layer.unique_id) == "planes"):
            return None
        n = _shape(layer)[axis]
        where = "first" if axis == 0 else "last"
        return (f"The {where} axis of '{layer.name}' has only {n} entries: are they {n} "
                f"channels (colours, stains) or {n} planes (Z or time)?")

    def _update_question(self) -> None:
        text = self.pending_question()
        self.question.setVisible(text is not None)
        self.question_text.setText(text or "")

    def _answer_channels(self) -> None:
        axis = short_axis(self.image_layer())
        if axis is not None:
            self.channel_axis.setCurrentIndex(self.channel_axis.findData(axis))

    def _answer_planes(self) -> None:
        layer = self.image_layer()
        if layer is not None:
            self._answers[layer.unique_id] = "planes"
        self._update_question()
        self.changed.emit()

    # -- the source ----------------------------------------------------------------------------
    def _rgb_layers(self) -> list[Any | None]:
        by_name = {layer.name: layer for layer in self._image_layers()}
        return [by_name.get(combo.currentText()) for combo in self.rgb_combos]

    def source(self, world_point: Any, short_side: int | None) -> ImageSource:
        """What to segment, as chosen (main thread).

        Raises
        ------
        InvalidInputError
            No image, an unanswered "channels or planes?" question, a bad channel choice.
        """
        if self.combine.isChecked():
            return combined_source(self._rgb_layers(), world_point, short_side=short_side)
        layer = self.image_layer()
        if layer is None:
            raise InvalidInputError("No image to segment: open an image (or File > Open Sample) "
                                    "and pick it under 'Image'.")
        question = self.pending_question()
        if question is not None:
            raise InvalidInputError(f"{question} Answer with the buttons under 'Image', then "
                                    "press Run.")
        axis = self.channel_axis.currentData()
        channels = parse_channels(self.channels.text()) if axis is not None else None
        return image_source(layer, world_point, channel_axis=axis, channels=channels,
                            short_side=short_side)

    def every_plane(self) -> bool:
        """Whether "all planes" is chosen (and applies)."""
        return self.planes.isEnabled() and self.planes.currentText() == "all planes"
