"""Model, method and window settings; each control maps onto one flat ``SegmentConfig`` field.

:meth:`SettingsPanel.options` returns a dict of flat option names (the same names as the CLI's
flags and the sidecar's ``config``), so :meth:`clipseg.config.SegmentConfig.from_flat` validates
everything in one place.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from clipseg.config import PROMPT_SETS, READOUTS

DEFAULT_MODEL = "ViT-B-16/openai"


def available_devices() -> list[str]:
    """``auto`` and ``cpu``, plus ``cuda`` / ``mps`` when torch sees them."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _spin(low: int, high: int, value: int, special: str | None = None, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    if special is not None:
        box.setSpecialValueText(special)
    return box


class SettingsPanel(QWidget):
    """Model / device / readout / PAMR / threshold controls and an advanced window group."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from clipseg.models import list_models

        self.model = QComboBox()
        self.model.addItems(list_models())
        self.model.setCurrentText(DEFAULT_MODEL)
        self.model.setToolTip("Registry model (weights from open_clip's cache), the bundled "
                              "demo model, or a model added with add_model()")
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("optional local weights file (.safetensors, .pt)")
        self.checkpoint.setToolTip("Weights for the chosen architecture, loaded safely "
                                   "(no code unpickling); overrides the pretrained tag")
        self.browse = QPushButton("…")
        self.browse.setMaximumWidth(30)
        self.browse.clicked.connect(self._browse)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.readout = QComboBox()
        self.readout.addItems(list(READOUTS))
        self.readout.setToolTip("clipseg = the paper's CRA + DSI; the others are baselines "
                                "for comparison")
        self.prompts = QComboBox()
        self.prompts.addItems(list(PROMPT_SETS))
        self.prompts.setToolTip("Prompts around each class name: imagenet80 = CLIP's 80 "
                                "(the paper's), imagenet7 = CLIP's 7 (much faster text on a "
                                "CPU), name = the bare name. Changing it re-labels without a "
                                "ViT pass")
        self.pamr = QCheckBox("PAMR refinement")
        self.pamr.setToolTip("Pixel-adaptive mask refinement: sharper edges, slower")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setToolTip("Pixels whose best class probability is below this stay "
                                  "unlabeled (0 = label every pixel)")

        ckpt_row = QHBoxLayout()
        ckpt_row.addWidget(self.checkpoint)
        ckpt_row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("checkpoint", ckpt_row)
        form.addRow("device", self.device)
        form.addRow("readout", self.readout)
        form.addRow("prompts", self.prompts)
        form.addRow("unlabeled below", self.threshold)
        form.addRow("", self.pamr)

        # advanced: 0 means "the model's default" / "keep the original size"
        self.crop = _spin(0, 4096, 0, special="model default", step=16)
        self.crop.setToolTip("Sliding-window size in resized pixels")
        self.stride = _spin(0, 4096, 0, special="model default", step=16)
        self.stride.setToolTip("Step between windows (at most the window size)")
        self.short_side = _spin(0, 8192, 448, special="original size", step=32)
        self.short_side.setToolTip("Resize so the short side has this many pixels first")
        self.batch_size = _spin(1, 256, 8)
        self.batch_size.setToolTip("Windows per forward pass and per progress step")
        inner = QWidget()
        adv = QFormLayout(inner)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.addRow("window", self.crop)
        adv.addRow("stride", self.stride)
        adv.addRow("short side", self.short_side)
        adv.addRow("windows per batch", self.batch_size)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(inner)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        self._entries: dict[str, Any] = {}
        self.model.currentTextChanged.connect(self._on_model)
        self._on_model(self.model.currentText())

    def _entry(self, name: str) -> Any | None:
        """Registry entry of ``name`` (or of a model added by name), None if unknown."""
        from clipseg.errors import InvalidConfigError
        from clipseg.models import get_entry

        if name in self._entries:
            return self._entries[name]
        try:
            return get_entry(name)
        except InvalidConfigError:
            return None

    def _on_model(self, name: str) -> None:
        """Show the model's own short side (the resize it was tuned for) and describe it."""
        entry = self._entry(name)
        if entry is None:
            return
        self.short_side.setValue(entry.short_side or 0)
        self.model.setToolTip(f"{entry.description}\nwindow {entry.crop}, stride "
                              f"{entry.stride}, short side {entry.short_side}, middle layer "
                              f"{entry.middle_layer}")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Weights (*.safetensors *.pt *.pth *.bin);;"
                                              "All files (*)")
        if path:
            self.checkpoint.setText(path)

    def add_model_name(self, name: str, entry: Any | None = None) -> None:
        """List ``name`` in the model box (if new) and select it; ``entry`` gives its defaults."""
        if entry is not None:
            self._entries[name] = entry
        if self.model.findText(name) < 0:
            self.model.addItem(name)
        self.model.setCurrentText(name)

    def options(self) -> dict[str, Any]:
        """The flat ``SegmentConfig`` options these controls set (validated by the caller)."""
        ckpt = self.checkpoint.text().strip()
        return {
            "model": self.model.currentText(),
            "checkpoint": ckpt or None,
            "device": self.device.currentText(),
            "method": self.readout.currentText(),
            "pamr": self.pamr.isChecked(),
            "prompts": self.prompts.currentText(),
            "threshold": round(float(self.threshold.value()), 4),
            "crop": self.crop.value() or None,
            "stride": self.stride.value() or None,
            "short_side": self.short_side.value() or None,
            "batch_size": self.batch_size.value(),
        }
