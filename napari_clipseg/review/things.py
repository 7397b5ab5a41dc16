"""The review widget's "Instances" box: which classes are countable things, and how to split them.

One checkbox per class of the series' table, a minimum area and the watershed switch. The box
only holds the choice; the widget computes the Instances layer from it
(:func:`clipseg.instances.instance_map`) and saves it with the draft. A draft that was split
before (``clipseg batch --instances``, or an earlier review) brings its own choice, which the
box shows until the person changes something; from then on the person's choice is kept from
image to image.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

__all__ = ["ThingsBox"]


class ThingsBox(QGroupBox):
    """The "things" checkboxes and the splitting options.

    Signals
    -------
    changed : emitted when the person ticks a class or changes an option.
    """

    changed = Signal()

    def __init__(self) -> None:
        super().__init__("Instances")
        layout = QVBoxLayout(self)
        self.note = QLabel("Tick the classes whose regions are separate objects "
                           "(\"things\": nuclei, cars); each connected region becomes "
                           "one object in the Instances layer, saved as "
                           "NAME.instances.tif.")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self._list = QWidget()
        self._grid = QGridLayout(self._list)
        self._grid.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._list)
        self.min_area = QSpinBox()
        self.min_area.setRange(0, 10_000_000)
        self.min_area.setSuffix(" px")
        self.min_area.setToolTip("Objects smaller than this are dropped")
        self.watershed = QCheckBox("split touching objects (watershed)")
        self.watershed.setToolTip("Separate touching objects of one class along the valleys "
                                  "of the distance transform (works for roundish blobs)")
        form = QFormLayout()
        form.addRow("min area", self.min_area)
        form.addRow("", self.watershed)
        layout.addLayout(form)
        #: class name -> its checkbox, in the table's order
        self.boxes: dict[str, QCheckBox] = {}
        self._checked: set[str] = set()
        self._from_user = False
        self.min_area.valueChanged.connect(self._on_option)
        self.watershed.toggled.connect(self._on_option)

    # -- what the widget shows ------------------------------------------------------------
    def show_classes(self, names: Sequence[str], draft_entry: Any = None) -> None:
        """One checkbox per name; the draft's own ``"instances"`` entry is shown unless the
        person has chosen already."""
        if not self._from_user and isinstance(draft_entry, dict) \
                and isinstance(draft_entry.get("classes"), list):
            self._checked = {str(n) for n in draft_entry["classes"]}
            if isinstance(draft_entry.get("min_area"), int):
                self.min_area.blockSignals(True)
                self.min_area.setValue(draft_entry["min_area"])
                self.min_area.blockSignals(False)
            self.watershed.blockSignals(True)
            self.watershed.setChecked(bool(draft_entry.get("watershed")))
            self.watershed.blockSignals(False)
        names = list(names)
        if list(self.boxes) != names:
            for box in self.boxes.values():
                self._grid.removeWidget(box)
                box.deleteLater()
            self.boxes = {}
            columns = 2 if len(names) > 4 else 1
            for k, name in enumerate(names):
                box = QCheckBox(name)
                box.setToolTip(f"Split '{name}' into objects")
                box.toggled.connect(lambda on, n=name: self._on_thing(n, on))
                self._grid.addWidget(box, k // columns, k % columns)
                self.boxes[name] = box
        for name, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(name in self._checked)
            box.blockSignals(False)

    def choose(self, names: Sequence[str]) -> None:
        """Mark ``names`` as things (the person's choice; the others are not)."""
        self._from_user = True
        self._checked = set(names)
        for name, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(name in self._checked)
            box.blockSignals(False)

    # -- what the widget reads --------------------------------------------------------------
    @property
    def any_checked(self) -> bool:
        return bool(self._checked)

    def things_of(self, table_names: Sequence[str]) -> tuple[list[str], list[int]]:
        """The checked names among ``table_names`` and their labels (1-based positions)."""
        names = [n for n in table_names if n in self._checked]
        return names, [list(table_names).index(n) + 1 for n in names]

    def options(self, table_names: Sequence[str]) -> Any:
        """:class:`~clipseg.apps.batch_instances.InstanceOptions`, or None with no thing."""
        from clipseg.apps.batch_instances import InstanceOptions

        names, _labels = self.things_of(table_names)
        if not names:
            return None
        return InstanceOptions(classes=tuple(names), min_area=int(self.min_area.value()),
                               watershed=self.watershed.isChecked())

    def _on_thing(self, name: str, on: bool) -> None:
        self._from_user = True
        if on:
            self._checked.add(name)
        else:
            self._checked.discard(name)
        self.changed.emit()

    def _on_option(self, *_args: Any) -> None:
        self._from_user = True
        self.changed.emit()
