"""Model, method and window settings; each control maps onto one flat ``SegmentConfig`` field.

:meth:`SettingsPanel.options` returns a dict of flat option names (the same names as the CLI's
flags and the sidecar's ``config``), so :meth:`clipseg.config.SegmentConfig.from_flat` validates
everything in one place.

The model box lists every model with its name as item data; the text marks the bundled demo
model as a toy and models whose weights are not on this computer as needing a download
(:mod:`napari_clipseg.model_choice`). The model selected at first is the best one that can
load now (:func:`default_model`).
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

#: The paper's default model, first choice when its weights are here.
DEFAULT_MODEL = "ViT-B-16/openai"


def default_model() -> str:
    """The best model that can load here and now: a cached real model, else the demo model."""
    from clipseg.models import list_models

    from .model_choice import best_model

    names = list_models()
    if DEFAULT_MODEL in names:
        names = [DEFAULT_MODEL] + [n for n in names if n != DEFAULT_MODEL]
    return best_model(names)


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

        from .model_choice import display_name

        self.model = QComboBox()
        for name in list_models():
            self.model.addItem(display_name(name), name)
        self.model.setToolTip("The CLIP model that reads the image and the class names")
        # long names ("... (download needed)") must not widen the dock; the list shows them
        self.model.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(24)
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("optional local weights file (.safetensors, .pt)")
        self.checkpoint.setToolTip("A weights file on this computer for the chosen model, used "
                                   "instead of its downloaded weights. Files that would run "
                                   "code when loaded are refused")
        self.browse = QPushButton("…")
        self.browse.setMaximumWidth(30)
        self.browse.setToolTip("Choose a weights file")
        self.browse.clicked.connect(self._browse)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("Where the model runs: auto picks the graphics card when there "
                               "is one, else the processor (cpu)")
        self.readout = QComboBox()
        self.readout.addItems(list(READOUTS))
        self.readout.setToolTip("How the model's features become a class per pixel: clipseg is "
                                "this method; the others are published alternatives, for "
                                "comparison")
        self.prompts = QComboBox()
        self.prompts.addItems(list(PROMPT_SETS))
        self.prompts.setToolTip("The sentences each class name is put into before the model "
                                "reads it: imagenet80 = CLIP's 80 (best), imagenet7 = 7 (much "
                                "faster on a processor with many classes), name = the bare "
                                "name. Changing it re-labels the image without reading it "
                                "again")
        self.pamr = QCheckBox("PAMR refinement")
        self.pamr.setToolTip("Refine the outlines so they follow the image's edges: sharper, "
                             "slower")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setToolTip("A pixel whose best class scores below this stays unlabeled "
                                  "(0 = label every pixel). Raise it to leave doubtful pixels "
                                  "for you")

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
        self.crop.setToolTip("The model looks at the image in square windows of this many "
                             "pixels (of the resized image)")
        self.stride = _spin(0, 4096, 0, special="model default", step=16)
        self.stride.setToolTip("The step from one window to the next (at most the window "
                               "size; smaller = more overlap, slower)")
        self.short_side = _spin(0, 8192, 448, special="original size", step=32)
        self.short_side.setToolTip("The image is first resized so its short side has this "
                                   "many pixels: larger finds smaller objects, slower")
        self.batch_size = _spin(1, 256, 8)
        self.batch_size.setToolTip("Windows read at once (one progress step each batch); "
                                   "lower it if memory runs out")
        inner = QWidget()
        adv = QFormLayout(inner)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.addRow("window", self.crop)
        adv.addRow("stride", self.stride)
        adv.addRow("short side", self.short_side)
        adv.addRow("windows per batch", self.batch_size)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(inner)
        header = self.advanced.findChild(QPushButton)
        if header is not None:
            header.setToolTip("Show or hide the window settings (the model's defaults suit "
                              "most images)")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        self._entries: dict[str, Any] = {}
        self.model.currentIndexChanged.connect(lambda _i: self._on_model(self.model_name()))
        self.set_model(default_model())
        self._on_model(self.model_name())

    def model_name(self) -> str:
        """The name of the chosen model (without the marks shown in the box)."""
        return self.model.currentData() or self.model.currentText()

    def set_model(self, name: str) -> None:
        """Choose model ``name`` (a registry name, or one added with ``add_model_name``)."""
        index = self.model.findData(name)
        if index < 0:
            from clipseg.errors import InvalidInputError

            raise InvalidInputError(f"model: expected one of the listed models, got {name!r}")
        self.model.setCurrentIndex(index)

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
        from .model_choice import is_toy

        self.short_side.setValue(entry.short_side or 0)
        toy = ("\nA toy trained on the synthetic shapes sample: it shows how the widget works "
               "offline, it knows nothing about real images.") if is_toy(name) else ""
        self.model.setToolTip(f"The CLIP model that reads the image and the class names.\n"
                              f"{entry.description}: windows of {entry.crop} pixels, "
                              f"images resized to a short side of {entry.short_side}.{toy}")

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
        if self.model.findData(name) < 0:
            self.model.addItem(name, name)
        self.set_model(name)

    def options(self) -> dict[str, Any]:
        """The flat ``SegmentConfig`` options these controls set (validated by the caller)."""
        ckpt = self.checkpoint.text().strip()
        return {
            "model": self.model_name(),
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
