"""The class-list editor: one class per line (synonyms after ";"), per-class thresholds.

The text is parsed by the engine's :func:`clipseg.text.parse_classes` (the single source of the
syntax), and the thresholds table follows the parsed names: editing the text keeps the threshold
of every class whose name is unchanged.
"""
from __future__ import annotations

import html
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clipseg.errors import ClipSegError, InvalidInputError

from .tables import fit_rows

#: Spin-box value that means "no override: use the global threshold" (shown as "global").
GLOBAL = -0.01


class ClassesPanel(QWidget):
    """Text box for classes, load/save buttons and a per-class threshold table.

    Signals
    -------
    changed : emitted whenever the class list or a threshold changes.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("one class per line; synonyms after ';'\n"
                                     "e.g.\ncat; kitten\ngrass\nsky")
        self.text.setToolTip("The classes to find, one per line (or separated by commas). "
                             "Other words for the same class follow its name after ';' "
                             "(e.g. 'car; automobile'); the best-matching word counts.")
        self.text.setMinimumHeight(80)
        self.text.setMaximumHeight(130)
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Read the class list from a text file")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the class list to a text file")
        self.suggest_button = QPushButton("Suggested")
        self.suggest_button.setToolTip("Use the class list that comes with the selected image "
                                       "(the samples have one)")
        self.suggest_button.setEnabled(False)
        self._suggested: list[str] = []
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["class", "threshold"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip("The lowest score a pixel needs to get this class; 'global' "
                              "uses 'unlabeled below' (under Method) for the class")
        fit_rows(self.table, 6)

        buttons = QHBoxLayout()
        for b in (self.load_button, self.save_button, self.suggest_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(QLabel("Per-class thresholds"))
        layout.addWidget(self.table)

        self.text.textChanged.connect(self._on_text)
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        self.suggest_button.clicked.connect(lambda: self.set_text("\n".join(self._suggested)))

    # -- values ------------------------------------------------------------------------------
    def class_text(self) -> str:
        """The class list as typed."""
        return self.text.toPlainText()

    def set_text(self, text: str) -> None:
        """Replace the class list (one class per line)."""
        self.text.setPlainText(text)

    def class_names(self) -> list[str]:
        """Parsed class names (raises ``InvalidInputError`` for an invalid list)."""
        from clipseg.text import parse_classes

        return [spec.name for spec in parse_classes(self.class_text())]

    def thresholds(self) -> dict[str, float]:
        """Per-class overrides ``{name: threshold}``; classes left at "global" are omitted."""
        out: dict[str, float] = {}
        for row in range(self.table.rowCount()):
            spin = self.table.cellWidget(row, 1)
            if spin.value() > GLOBAL / 2:
                out[self.table.item(row, 0).text()] = round(float(spin.value()), 4)
        return out

    def set_threshold(self, name: str, value: float | None) -> None:
        """Set the override of class ``name`` (None = global)."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == name:
                self.table.cellWidget(row, 1).setValue(GLOBAL if value is None else value)
                return
        raise InvalidInputError(f"class {name!r}: expected one of the listed classes "
                                f"{self._names()}")

    def rename(self, old: str, new: str) -> bool:
        """Rename class ``old`` to ``new`` in the list (its synonyms stay); False if not listed.

        The list is rewritten one class per line, synonyms after ';'; a per-class threshold
        follows the class to its new name.
        """
        from clipseg.text import parse_classes

        try:
            specs = parse_classes(self.class_text())
        except ClipSegError:
            return False
        if old not in [spec.name for spec in specs]:
            return False
        kept = {name: value for name, value in self.thresholds().items()}
        lines = []
        for spec in specs:
            names = list(spec.synonyms)
            if spec.name == old:
                names = [new] + [s for s in names[1:] if s.lower() != new.lower()]
            lines.append("; ".join(names) + ("," if len(specs) == 1 and len(names) > 1 else ""))
        self.set_text("\n".join(lines))
        if old in kept:
            self.set_threshold(new, kept[old])
        return True

    def set_suggested(self, classes: list[str]) -> None:
        """Offer ``classes`` (from the image layer's metadata) through the Suggested button."""
        self._suggested = list(classes)
        self.suggest_button.setEnabled(bool(classes))

    # -- internals ---------------------------------------------------------------------------
    def _names(self) -> list[str]:
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def _on_text(self) -> None:
        old = {}
        for row in range(self.table.rowCount()):
            old[self.table.item(row, 0).text()] = self.table.cellWidget(row, 1).value()
        try:
            names = self.class_names() if self.class_text().strip() else []
            self.message.setText("")
        except ClipSegError as exc:
            self.message.setText(f"<span style='color:#e06c75'>{html.escape(str(exc))}</span>")
            self.changed.emit()
            return
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(row, 0, item)
            spin = QDoubleSpinBox()
            spin.setRange(GLOBAL, 1.0)
            spin.setSingleStep(0.05)
            spin.setDecimals(2)
            spin.setSpecialValueText("global")
            spin.setToolTip(f"The lowest score a pixel needs to become '{name}'; 'global' = "
                            "the value of 'unlabeled below'")
            spin.setValue(old.get(name, GLOBAL))
            spin.valueChanged.connect(lambda _v: self.changed.emit())
            self.table.setCellWidget(row, 1, spin)
        fit_rows(self.table, 6)
        self.changed.emit()

    def load_file(self, path: str | Path) -> None:
        """Read a class list from a UTF-8 text file (one class per line)."""
        from clipseg.text import class_file_text

        self.set_text(class_file_text(Path(path).read_text(encoding="utf-8")))

    def save_file(self, path: str | Path) -> None:
        """Write the class list to a UTF-8 text file, one class per line."""
        text = self.class_text().strip()
        Path(path).write_text(text + "\n", encoding="utf-8")

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load class list", "",
                                              "Text files (*.txt);;All files (*)")
        if path:
            self.load_file(path)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save class list", "classes.txt",
                                              "Text files (*.txt)")
        if path:
            self.save_file(path)
