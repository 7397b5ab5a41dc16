"""The dock widget "CLIP open-vocabulary segmentation".

Layout, top to bottom: the image (layer, channel axis and channels, current plane or all planes),
the classes (:class:`~napari_clipseg.classes_panel.ClassesPanel`), the method
(:class:`~napari_clipseg.settings_panel.SettingsPanel`), the output (how a re-run writes, score
layers) and Run / Cancel with a progress bar.

Threading: :meth:`ClipSegWidget.run` captures everything it needs on the main thread
(:meth:`ClipSegWidget.make_request`), runs :func:`napari_clipseg.job.guarded_run` in a napari
``GeneratorWorker`` and applies the result in the ``returned`` slot, on the main thread. Cancel
calls ``worker.quit()``: the job stops at its next yield and nothing reaches the viewer.
:meth:`ClipSegWidget.run_blocking` does the same without a thread (tests, scripts).
"""
from __future__ import annotations

import html
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from clipseg.config import SegmentConfig
from clipseg.errors import ClipSegError

from .apply import apply_result
from .classes_panel import ClassesPanel
from .image_source import image_source, parse_channels
from .job import JobFailure, JobProgress, JobRequest, JobResult, Session, drive, guarded_run
from .labels_layer import MERGE_MODES
from .settings_panel import SettingsPanel

PLANE_MODES = ("current plane", "all planes")


class ClipSegWidget(QWidget):
    """Open-vocabulary segmentation of an Image layer into a class-named Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari when the widget is opened from the Plugins menu.
    session : Session, optional
        Model cache and engine state (a new one by default).

    Signals
    -------
    progressed : emitted on the main thread with each :class:`~napari_clipseg.job.JobProgress`.
    """

    progressed = Signal(object)

    def __init__(self, napari_viewer: Any, session: Session | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session if session is not None else Session()
        self.worker: Any = None
        self._pbar: Any = None
        self.last_layer: Any = None
        self._shown: tuple | None = None  # (unique_id, ndim, rgb) of the layer shown above

        # -- image -------------------------------------------------------------------------
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to segment")
        self.channel_axis = QComboBox()
        self.channel_axis.setToolTip("For multichannel data stored as one layer: the axis that "
                                     "holds channels")
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("r, g, b channel indices, e.g. 2, 0, 1")
        self.channels.setToolTip("Channels shown as R, G, B; one index = gray; '-' = black")
        self.planes = QComboBox()
        self.planes.addItems(list(PLANE_MODES))
        self.planes.setToolTip("Segment the plane shown in the viewer, or every plane of the "
                               "stack (with progress)")
        image_box = QGroupBox("Image")
        image_form = QFormLayout(image_box)
        image_form.addRow("layer", self.layer_combo)
        image_form.addRow("channel axis", self.channel_axis)
        image_form.addRow("channels → RGB", self.channels)
        image_form.addRow("planes", self.planes)

        # -- classes / settings ------------------------------------------------------------
        self.classes = ClassesPanel()
        classes_box = QGroupBox("Classes")
        QVBoxLayout(classes_box).addWidget(self.classes)
        self.settings = SettingsPanel()
        settings_box = QGroupBox("Method")
        QVBoxLayout(settings_box).addWidget(self.settings)

        # -- output ------------------------------------------------------------------------
        self.mode = QComboBox()
        self.mode.addItems(list(MERGE_MODES))
        self.mode.setToolTip("fill unlabeled: keep every labelled pixel of the existing layer "
                             "(your corrections); replace: overwrite (undoable); new layer")
        self.scores = QCheckBox("add per-class score layers")
        out_box = QGroupBox("Output")
        out_form = QFormLayout(out_box)
        out_form.addRow("re-run writes", self.mode)
        out_form.addRow("", self.scores)

        # -- run ---------------------------------------------------------------------------
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.body = body = QWidget()
        layout = QVBoxLayout(body)
        for w in (image_box, classes_box, settings_box, out_box):
            layout.addWidget(w)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._scroll = scroll

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.layer_combo.currentTextChanged.connect(self._on_layer)
        self.channel_axis.currentIndexChanged.connect(self._update_channels)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                      self.viewer.layers.events.moved):
            event.connect(self._refresh_layers)
        self.viewer.layers.events.inserted.connect(self._watch_name)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        """Ask the dock for the content's width (a scroll area does not pass it on); measured
        once shown, after napari's stylesheet has set fonts and paddings."""
        scroll = self._scroll
        self.setMinimumWidth(self.body.minimumSizeHint().width() + 2 * scroll.frameWidth()
                             + scroll.verticalScrollBar().sizeHint().width())
        super().showEvent(event)

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)

    # -- layer choice ----------------------------------------------------------------------
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        elif names and self.viewer.layers.selection.active is not None \
                and self.viewer.layers.selection.active.name in names:
            self.layer_combo.setCurrentText(self.viewer.layers.selection.active.name)
        self.layer_combo.blockSignals(False)
        self._on_layer(self.layer_combo.currentText())

    def image_layer(self) -> Any | None:
        """The Image layer selected in the widget, or None."""
        name = self.layer_combo.currentText()
        for layer in self._image_layers():
            if layer.name == name:
                return layer
        return None

    def set_layer(self, name: str) -> None:
        """Select the Image layer ``name``."""
        self.layer_combo.setCurrentText(name)

    def _on_layer(self, _name: str) -> None:
        layer = self.image_layer()
        ident = None if layer is None else (layer.unique_id, layer.ndim, layer.rgb)
        if ident is not None and ident == self._shown:
            return  # same layer (other layers changed): keep the channel choices
        self._shown = ident
        self.channel_axis.blockSignals(True)
        self.channel_axis.clear()
        self.channel_axis.addItem("none", None)
        stack = False
        if layer is not None and not layer.rgb:
            for axis in range(layer.ndim - 2):
                size = layer.level_shapes[0][axis] if layer.multiscale else layer.data.shape[axis]
                self.channel_axis.addItem(f"axis {axis} ({size})", axis)
        if layer is not None:
            stack = layer.ndim > 2
        self.channel_axis.blockSignals(False)
        self.channel_axis.setEnabled(self.channel_axis.count() > 1)
        self.planes.setEnabled(stack)
        self._update_channels()
        meta = getattr(layer, "metadata", None) or {}
        self.classes.set_suggested(list(meta.get("clipseg_classes", [])))

    def _update_channels(self, _index: int = 0) -> None:
        has_axis = self.channel_axis.currentData() is not None
        self.channels.setEnabled(has_axis)
        if not has_axis:
            self.channels.clear()

    # -- requests ----------------------------------------------------------------------------
    def config(self) -> SegmentConfig:
        """The validated engine configuration for the current controls."""
        options = self.settings.options()
        options["class_thresholds"] = self.classes.thresholds()
        return SegmentConfig.from_flat(options)

    def make_request(self) -> JobRequest:
        """Capture everything a run needs from the viewer and the controls (main thread).

        Raises
        ------
        ClipSegError
            No image layer, an invalid class list, channel choice or setting.
        """
        from clipseg.errors import InvalidInputError
        from clipseg.text import parse_classes

        layer = self.image_layer()
        if layer is None:
            raise InvalidInputError("image: expected an Image layer to segment, got none; open "
                                    "an image (or File > Open Sample) and pick it above")
        config = self.config()
        parse_classes(self.classes.class_text())  # fail early, with the engine's message
        channel_axis = self.channel_axis.currentData()
        channels = parse_channels(self.channels.text()) if channel_axis is not None else None
        source = image_source(layer, self.viewer.dims.point, channel_axis=channel_axis,
                              channels=channels, short_side=config.window.short_side)
        every = self.planes.isEnabled() and self.planes.currentText() == "all planes"
        planes = source.all_planes() if every else [source.current]
        return JobRequest(source=source, planes=planes, classes=self.classes.class_text(),
                          config=config, scores=self.scores.isChecked())

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Any:
        """Start a run in a napari worker thread; returns the worker (None if refused)."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.worker is not None:
            return None
        try:
            request = self.make_request()
        except ClipSegError as exc:
            self._fail(str(exc))
            return None
        self._set_running(True)
        self._pbar = progress(total=0, desc="clipseg")
        worker = create_worker(guarded_run, self.session, request, _start_thread=False,
                               _connect={"yielded": self._on_progress,
                                         "returned": self._on_returned,
                                         "aborted": self._on_aborted,
                                         "errored": self._on_errored,
                                         "finished": self._on_finished})
        self.worker = worker
        worker.start()
        return worker

    def run_blocking(self) -> Any:
        """Run on the calling thread and apply the result; returns the Labels layer or None."""
        try:
            request = self.make_request()
        except ClipSegError as exc:
            self._fail(str(exc))
            return None
        result = drive(guarded_run(self.session, request), self._on_progress)
        self._on_returned(result)
        return self.last_layer

    def cancel(self) -> None:
        """Ask the running job to stop at its next window batch."""
        if self.worker is not None:
            self.status.setText("cancelling…")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_progress(self, step: JobProgress) -> None:
        self.progressed.emit(step)
        total = max(step.total, 1)
        self.progress.setRange(0, total * step.n_planes)
        self.progress.setValue(step.plane * total + min(step.done, total))
        self.status.setText(step.text)
        pbar = self._pbar  # local: napari's events may process the finished slot meanwhile
        if pbar is not None:
            if pbar.total != total * step.n_planes:
                pbar.total = total * step.n_planes
            delta = step.plane * total + min(step.done, total) - pbar.n
            if delta:
                pbar.update(delta)  # emits napari's value event
            pbar.set_description(f"clipseg: {step.text}")

    def _on_returned(self, result: JobResult | JobFailure) -> None:
        if isinstance(result, JobFailure):
            self._fail(result.message)
            return
        try:
            layer = apply_result(self.viewer, result, self.mode.currentText())
        except ClipSegError as exc:
            self._fail(str(exc))
            return
        self.last_layer = layer
        how = "re-labelled from cached embeddings" if result.relabelled else "segmented"
        self.status.setText(f"{how} {len(result.labels)} plane(s) with {len(result.class_names)} "
                            f"classes into '{layer.name}'")
        self.progress.setValue(self.progress.maximum())

    def _on_aborted(self) -> None:
        # Nothing to forget: the engine caches a plane's embeddings only once its window pass
        # is complete, so a cancelled run leaves either a valid cache or none.
        self.status.setText("cancelled; the viewer is unchanged")
        self.progress.setValue(0)

    def _on_errored(self, exc: Exception) -> None:
        # An unexpected error (a bug): napari's worker has already shown it as a notification
        # with its traceback; keep the widget usable and say so here.
        self.session.forget_embeddings()
        text = html.escape(f"failed: {type(exc).__name__}: {exc}")
        self.status.setText(f"<span style='color:#e06c75'>{text}</span>")

    def _on_finished(self) -> None:
        self.worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._set_running(False)

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"<span style='color:#e06c75'>{html.escape(message)}</span>")
        show_error(message)

    # -- scripting ---------------------------------------------------------------------------
    def add_model(self, name: str, model: Any) -> None:
        """Offer an already-built model (``LoadedModel`` or open_clip CLIP) as ``name``."""
        self.session.add_model(name, model)
        self.settings.add_model_name(name, getattr(self.session.loaded(name), "entry", None))
