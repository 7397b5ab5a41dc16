"""The legend: one row per class of the result layer, with its colour, name, synonyms and pixels.

- Clicking a row selects that class's label for painting (the layer becomes the active layer,
  in paint mode), so correcting "dots" needs no guessing that it is label 5.
- Editing a name renames the class in the layer (features, metadata) and, through
  :attr:`Legend.renamed`, in the class list; the colour button recolours it (colormap).
- The rows follow the layer's table, which holds the listed classes and every label still
  painted (:func:`napari_clipseg.labels_layer.update_class_table`): a class neither listed nor
  painted leaves it. A line under the table counts the pixels a person set.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clipseg.errors import ClipSegError

from .labels_layer import (
    EDITS_KEY,
    known_classes,
    label_counts,
    layer_colors,
    recolor_class,
    rename_class,
    table_labels,
    update_class_table,
)
from .tables import fit_rows

COLUMNS = ("", "class", "other words", "pixels")


class Legend(QWidget):
    """The class table of one Labels layer, editable.

    Signals
    -------
    renamed : (old, new) after a class was renamed in the layer.
    """

    renamed = Signal(str, str)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer: Any = None
        self._labels: list[int] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col in (0, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setToolTip("The classes of the result layer. Click a row to paint with that "
                              "class; double-click a name to rename it; click the colour to "
                              "change it")
        fit_rows(self.table)
        self.empty = QLabel("Run a segmentation: its classes appear here.")
        self.title = QLabel("")
        self.title.setToolTip("The result layer these classes belong to")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setToolTip("Pixels you painted, filled or erased are yours: a re-run "
                                "never changes them (except 'replace all')")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty)
        layout.addWidget(self.title)
        layout.addWidget(self.table)
        layout.addWidget(self.summary)
        layout.addWidget(self.message)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.refresh)
        self.table.cellClicked.connect(lambda row, _col: self.select_row(row))
        self.table.itemChanged.connect(self._on_item)
        self._filling = False
        self.refresh()

    # -- following a layer ---------------------------------------------------------------------
    def set_layer(self, layer: Any | None) -> None:
        """Show the classes of ``layer`` (None: nothing)."""
        if layer is self.layer:
            self.schedule()
            return
        if self.layer is not None:
            for event in self._events(self.layer):
                event.disconnect(self.schedule)
        self.layer = layer
        if layer is not None:
            for event in self._events(layer):
                event.connect(self.schedule)
        self.refresh()

    @staticmethod
    def _events(layer: Any) -> list[Any]:
        # features/colormap: the table; paint: strokes; set_data: undo, redo, data replaced
        return [layer.events.features, layer.events.colormap, layer.events.paint,
                layer.events.set_data]

    def schedule(self, _event: Any = None) -> None:
        """Refresh soon (several changes in a row cost one refresh)."""
        self._timer.start()

    def refresh(self) -> None:
        """Rebuild the rows from the layer: table, colours, pixel counts, edit count."""
        layer = self.layer
        if layer is not None and not any(x.unique_id == layer.unique_id
                                         for x in self.viewer.layers):
            layer = self.layer = None
        self.empty.setVisible(layer is None)
        self.table.setVisible(layer is not None)
        self.title.setVisible(layer is not None)
        self.title.setText(f"layer '{layer.name}'" if layer is not None else "")
        if layer is None:
            self._labels = []
            self.table.setRowCount(0)
            self.summary.setText("")
            return
        counts = label_counts(layer)
        names = table_labels(layer)
        painted = {int(v) for v in np.nonzero(counts)[0] if v > 0}
        listed = set(layer.metadata.get("clipseg", {}).get("listed", []))
        wanted = {label for label, (name, _s) in known_classes(layer).items()
                  if name in listed or label in painted} | painted
        if wanted != set(names):  # a class came back (undo) or its last pixel went
            update_class_table(layer, counts=counts)
            names = table_labels(layer)
        known = known_classes(layer)
        colors = layer_colors(layer, sorted(names))
        self._filling = True
        self._labels = sorted(names)
        self.table.setRowCount(len(self._labels))
        fit_rows(self.table)
        for row, label in enumerate(self._labels):
            swatch = QPushButton("")
            swatch.setFixedWidth(28)
            swatch.setStyleSheet(f"background-color: {colors[label]}; border: none;")
            swatch.setToolTip(f"Label {label}: click to change its colour")
            swatch.clicked.connect(lambda _c=False, lb=label: self._pick_color(lb))
            self.table.setCellWidget(row, 0, swatch)
            name_item = QTableWidgetItem(names[label])
            name_item.setToolTip(f"Label {label}. Click to paint with it; double-click to "
                                 "rename")
            self.table.setItem(row, 1, name_item)
            others = [s for s in known.get(label, ("", []))[1] if s != names[label]]
            for col, text in ((2, ", ".join(others)),
                              (3, f"{int(counts[label]) if label < counts.size else 0:,}")):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                if col == 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self._filling = False
        edits = layer.metadata.get(EDITS_KEY)
        mine = int(edits.sum()) if isinstance(edits, np.ndarray) else 0
        self.summary.setText(f"{mine:,} pixels set by you (kept by every re-run)" if mine
                             else "No pixel set by you yet: paint, fill or erase to correct.")

    # -- actions ---------------------------------------------------------------------------------
    def label_at(self, row: int) -> int:
        """The label value shown in ``row``."""
        return self._labels[row]

    def row_of(self, name: str) -> int:
        """The row of class ``name``."""
        names = table_labels(self.layer)
        return self._labels.index(next(k for k, v in names.items() if v == name))

    def select_row(self, row: int) -> None:
        """Paint with the class of ``row``: select its label, activate the layer, paint mode."""
        if self.layer is None or not 0 <= row < len(self._labels):
            return
        self.viewer.layers.selection.active = self.layer
        self.layer.selected_label = self._labels[row]
        self.layer.mode = "paint"

    def rename(self, label: int, name: str) -> None:
        """Rename the class of ``label`` to ``name`` (and tell the class list)."""
        try:
            old = rename_class(self.layer, label, name)
        except ClipSegError as exc:
            self.message.setText(f"<span style='color:#e06c75'>{html.escape(str(exc))}</span>")
            self.refresh()
            return
        self.message.setText("")
        self.refresh()
        if old != name.strip():
            self.renamed.emit(old, name.strip())

    def set_color(self, label: int, color: str) -> None:
        """Show ``label`` in ``color`` (``"#rrggbb"``)."""
        recolor_class(self.layer, label, color)
        self.refresh()

    def _on_item(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 1:
            return
        self.rename(self._labels[item.row()], item.text())

    def _pick_color(self, label: int) -> None:
        current = layer_colors(self.layer, [label])[label]
        chosen = QColorDialog.getColor(QColor(current), self, f"Colour of label {label}")
        if chosen.isValid():
            self.set_color(label, chosen.name())
