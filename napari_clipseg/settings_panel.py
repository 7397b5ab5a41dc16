"""Model, method and window settings; each control maps onto one flat ``SegmentConfig`` field.

The model, checkpoint and device have controls of their own (a model list with marks, a file
picker, the devices torch sees). Every other option shown here comes from its declaration in
:mod:`clipseg.config`: the main form holds the options declared ``widget="main"``, the collapsible
*Advanced* group those declared ``widget="advanced"`` (:class:`napari_clipseg.options_form.
OptionsForm`, made with magicgui), so a newly declared option appears here with no edit.

:meth:`SettingsPanel.options` returns a dict of flat option names (the same names as the CLI's
flags and the sidecar's ``config``), so :meth:`clipseg.config.SegmentConfig.from_flat` validates
everything in one place, and :meth:`SettingsPanel.resolved` fills in the model's defaults with
:func:`clipseg.resolve.resolve_config`, as every other caller does.

The model box lists every model with its name as item data; the text marks the bundled demo
model as a toy and models whose weights are not on this computer as needing a download
(:mod:`napari_clipseg.model_choice`). The model selected at first is the best one that can
load now (:func:`default_model`).
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from clipseg.config import SegmentConfig

from .options_form import OptionsForm

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
        ckpt_row = QHBoxLayout()
        ckpt_row.addWidget(self.checkpoint)
        ckpt_row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("checkpoint", ckpt_row)
        form.addRow("device", self.device)
        self.main_form = OptionsForm("main")
        self.main_form.add_rows(form)  # in the same form: the labels line up
        self.advanced_form = OptionsForm("advanced")
        # the Qt controls of the main options, for signals and scripts
        self.readout = self.main_form.widget("method").native
        self.prompts = self.main_form.widget("prompts").native
        self.threshold = self.main_form.widget("threshold").native
        self.pamr = self.main_form.widget("pamr").native
        self.short_side = self.advanced_form.widget("short_side").native
        self.batch_size = self.advanced_form.widget("batch_size").native
        # "▶" closed, "▼" open, as tree views and napari's own panels draw it
        self.advanced = QCollapsible("Advanced", expandedIcon="▼", collapsedIcon="▶")
        self.advanced.addWidget(self.advanced_form.native)
        header = self.advanced.findChild(QPushButton)
        if header is not None:
            header.setToolTip("Show or hide the method's and the windows' settings (the model's "
                              "defaults suit most images)")

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
        """Show the model's own values where an option is left to it, and describe it."""
        entry = self._entry(name)
        if entry is None:
            return
        from clipseg.resolve import MODEL_DEFAULTS

        from .model_choice import is_toy

        for option, attr in MODEL_DEFAULTS.items():
            value = getattr(entry, attr)
            text = "original size" if option == "short_side" and not value else f"{value:g}"
            self.advanced_form.set_none_text(option, f"model's value: {text}")
        toy = ("\nA toy trained on the synthetic shapes sample: it shows how the widget works "
               "offline, it knows nothing about real images.") \
            if is_toy(name) and "toy" not in entry.description.lower() else ""
        size = (f"images resized to a short side of {entry.short_side} pixels"
                if entry.short_side else "images read at their own size")
        self.model.setToolTip(f"The CLIP model that reads the image and the class names.\n"
                              f"{entry.description}: windows of {entry.crop} pixels, "
                              f"{size}.{toy}")

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
            **self.main_form.values(),
            **self.advanced_form.values(),
        }

    def set_options(self, options: dict[str, Any]) -> None:
        """Show flat options (e.g. a sidecar's ``config``) in the generated controls."""
        self.main_form.set_values(options)
        self.advanced_form.set_values(options)

    def resolved(self, config: SegmentConfig) -> SegmentConfig:
        """``config`` with the chosen model's defaults filled in (as the engine will run it)."""
        from clipseg.resolve import resolve_config

        return resolve_config(config, self._entry(config.model.model))
