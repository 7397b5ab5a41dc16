"""The dock widget "CLIP open-vocabulary segmentation".

Layout: a scrolling part with, top to bottom, the image
(:class:`~napari_clipseg.image_panel.ImagePanel`), the classes
(:class:`~napari_clipseg.classes_panel.ClassesPanel`), the legend of the result layer
(:class:`~napari_clipseg.legend.Legend`), the method
(:class:`~napari_clipseg.settings_panel.SettingsPanel`) and the output; under it, always
visible whatever the panel's length, the run bar: live updates on/off, Run / Cancel, the
progress bar and the status line.

Threading: :meth:`ClipSegWidget.run` captures everything it needs on the main thread
(:meth:`ClipSegWidget.make_request`), runs :func:`napari_clipseg.job.guarded_run` in a napari
``GeneratorWorker`` and applies the result in the ``returned`` slot, on the main thread. Cancel
calls ``worker.quit()``: the job stops at its next yield (a model load is polled, so that is at
once) and nothing reaches the viewer. :meth:`ClipSegWidget.run_blocking` does the same without a
thread (tests, scripts). Human edits are tracked by :class:`~napari_clipseg.ownership.Ownership`;
live updates are scheduled by :class:`~napari_clipseg.live.LiveRelabel`.
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
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from clipseg.config import SegmentConfig
from clipseg.errors import ClipSegError

from .apply import MERGE_MODES, apply_result, find_target, labels_layer_name
from .classes_panel import ClassesPanel
from .image_panel import PLANE_MODES, ImagePanel  # noqa: F401 (PLANE_MODES re-exported)
from .image_source import source_changed
from .job import JobFailure, JobProgress, JobRequest, JobResult, Session, drive, guarded_run
from .legend import Legend
from .live import LiveRelabel
from .model_choice import TOY_MARK, is_toy
from .ownership import Ownership
from .settings_panel import SettingsPanel

ERROR = "#e06c75"
TOY_NOTE = (" The model is the bundled toy demo model: it knows only the synthetic shapes "
            "sample; pick a real model under 'model' for your images.")


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
        self.ownership = Ownership(napari_viewer)
        self.worker: Any = None
        self._worker_live = False
        self._pbar: Any = None
        self.last_layer: Any = None

        self.image = ImagePanel(napari_viewer)
        image_box = QGroupBox("Image")
        QVBoxLayout(image_box).addWidget(self.image)
        self.classes = ClassesPanel()
        classes_box = QGroupBox("Classes")
        QVBoxLayout(classes_box).addWidget(self.classes)
        self.legend = Legend(napari_viewer)
        legend_box = QGroupBox("Legend")
        QVBoxLayout(legend_box).addWidget(self.legend)
        self.settings = SettingsPanel()
        settings_box = QGroupBox("Method")
        QVBoxLayout(settings_box).addWidget(self.settings)

        self.mode = QComboBox()
        self.mode.addItems(list(MERGE_MODES))
        self.mode.setToolTip("How Run writes into an existing result layer. keep my edits: "
                             "every pixel you did not touch follows the new result, every "
                             "pixel you painted, filled or erased stays. replace all: the "
                             "new result everywhere (Ctrl+Z on the layer undoes it). new "
                             "layer: a fresh layer each time")
        self.scores = QCheckBox("add per-class score layers")
        self.scores.setToolTip("Also add one hidden image layer per class with its score per "
                               "pixel, to see where the model hesitates")
        out_box = QGroupBox("Output")
        out_form = QFormLayout(out_box)
        out_form.addRow("re-run writes", self.mode)
        out_form.addRow("", self.scores)

        # -- the run bar, pinned under the scrolling settings -----------------------------------
        self.live_box = QCheckBox("update live")
        self.live_box.setChecked(True)
        self.live_box.setToolTip("After a Run, changes to the classes or thresholds update the "
                                 "result at once, without reading the image again. Switch off "
                                 "for huge images")
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Segment the image into the classes above")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run; the viewer stays as it was")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setToolTip("Progress of the run")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setToolTip("What the last run did, or what went wrong")
        buttons = QHBoxLayout()
        buttons.addWidget(self.live_box)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button, 1)
        self.run_bar = QWidget()
        bar = QVBoxLayout(self.run_bar)
        bar.setContentsMargins(6, 4, 6, 6)
        bar.addLayout(buttons)
        bar.addWidget(self.progress)
        bar.addWidget(self.status)

        self.body = body = QWidget()
        layout = QVBoxLayout(body)
        for w in (image_box, classes_box, legend_box, settings_box, out_box):
            layout.addWidget(w)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.run_bar)
        self._scroll = scroll

        self.live = LiveRelabel(self)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.image.changed.connect(self._on_image)
        self.classes.changed.connect(self.live.schedule)
        self.settings.threshold.valueChanged.connect(self.live.schedule)
        self.settings.prompts.currentIndexChanged.connect(self.live.schedule)
        self.settings.model.currentIndexChanged.connect(self._on_model)
        self.legend.renamed.connect(self.classes.rename)
        self._on_image()
        self._on_model()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        """Ask the dock for the content's width (a scroll area does not pass it on); measured
        once shown, after napari's stylesheet has set fonts and paddings."""
        scroll = self._scroll
        self.setMinimumWidth(self.body.minimumSizeHint().width() + 2 * scroll.frameWidth()
                             + scroll.verticalScrollBar().sizeHint().width())
        super().showEvent(event)

    # -- the image and its result layer ------------------------------------------------------
    @property
    def layer_combo(self) -> QComboBox:
        return self.image.layer_combo

    @property
    def channel_axis(self) -> QComboBox:
        return self.image.channel_axis

    @property
    def channels(self) -> Any:
        return self.image.channels

    @property
    def planes(self) -> QComboBox:
        return self.image.planes

    def image_layer(self) -> Any | None:
        """The Image layer selected in the widget, or None."""
        return self.image.image_layer()

    def set_layer(self, name: str) -> None:
        """Select the Image layer ``name``."""
        self.image.set_layer(name)

    def result_layer(self) -> Any | None:
        """The result layer of the chosen image (else the last one written), or None."""
        from napari.layers import Labels

        if self.image.combine.isChecked():
            names = [c.currentText() for c in self.image.rgb_combos if c.currentText() != "none"]
            name = labels_layer_name("+".join(names))
        else:
            layer = self.image_layer()
            name = labels_layer_name(layer.name) if layer is not None else None
        if name is not None and name in self.viewer.layers \
                and isinstance(self.viewer.layers[name], Labels):
            return self.viewer.layers[name]
        last = self.last_layer
        if last is not None and any(x.unique_id == last.unique_id for x in self.viewer.layers):
            return last
        return None

    def _on_image(self) -> None:
        layer = self.image_layer()
        meta = getattr(layer, "metadata", None) or {}
        self.classes.set_suggested(list(meta.get("clipseg_classes", [])))
        self.legend.set_layer(self.result_layer())

    def _on_model(self, _index: int = 0) -> None:
        name = self.settings.model_name()
        if self.worker is None and is_toy(name):
            self.status.setText(f"Model: {name}, a {TOY_MARK}: it knows only the synthetic "
                                "shapes sample. For your images pick a real model under "
                                "'model' (its weights are downloaded once).")

    # -- requests ----------------------------------------------------------------------------
    def config(self) -> SegmentConfig:
        """The validated engine configuration for the current controls."""
        options = self.settings.options()
        options["class_thresholds"] = self.classes.thresholds()
        return SegmentConfig.from_flat(options)

    def make_request(self, live: bool = False) -> JobRequest:
        """Capture everything a run needs from the viewer and the controls (main thread).

        Raises
        ------
        ClipSegError
            No image layer, an unanswered "channels or planes?", an invalid class list,
            channel choice or setting.
        """
        from clipseg.text import parse_classes

        config = self.config()
        parse_classes(self.classes.class_text())  # fail early, with the engine's message
        short_side = self.settings.resolved(config).window.short_side  # the engine's value
        source = self.image.source(self.viewer.dims.point, short_side)
        planes = source.all_planes() if self.image.every_plane() and not live \
            else [source.current]
        return JobRequest(source=source, planes=planes, classes=self.classes.class_text(),
                          config=config, scores=self.scores.isChecked() and not live, live=live)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Any:
        """Start a run in a napari worker thread; returns the worker (None if refused)."""
        if self.worker is not None:
            return None
        try:
            request = self.make_request()
        except ClipSegError as exc:
            self._fail(str(exc))
            return None
        return self._start(request)

    def start_live(self) -> Any:
        """Start a live update of the current plane from cached embeddings, if there is one.

        Returns the worker, or None when there is nothing to update (no result layer, nothing
        cached, a class list being typed).
        """
        if self.worker is not None:
            return None
        try:
            request = self.make_request(live=True)
        except ClipSegError as exc:
            if self.result_layer() is not None:
                self._set_status(f"not updated: {exc}", error=True)
            return None
        source = request.source
        if find_target(self.viewer, source.name, source.label_shape) is None:
            return None
        return self._start(request)  # the job refuses a plane with nothing cached

    def _start(self, request: JobRequest) -> Any:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self._set_running(True)
        self._worker_live = request.live
        if not request.live:
            self.live.timer.stop()  # this run already uses every edit made so far
            self.live.pending = False
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

    def run_blocking(self, live: bool = False) -> Any:
        """Run on the calling thread and apply the result; returns the Labels layer or None."""
        try:
            request = self.make_request(live=live)
        except ClipSegError as exc:
            self._fail(str(exc))
            return None
        self._worker_live = live
        if not live:
            self.live.timer.stop()  # this run already uses every edit made so far
        result = drive(guarded_run(self.session, request), self._on_progress)
        self._on_returned(result)
        return self.last_layer

    def cancel(self) -> None:
        """Stop the running job at its next step (at once while a model loads)."""
        if self.worker is not None:
            self.status.setText("cancelling…")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_progress(self, step: JobProgress) -> None:
        self.progressed.emit(step)
        total = max(step.total, 1)
        if step.stage == "loading model":
            self.progress.setRange(0, 0)  # busy: a load has no steps to count
        else:
            self.progress.setRange(0, total * step.n_planes)
            self.progress.setValue(step.plane * total + min(step.done, total))
        self.status.setText(step.text)
        pbar = self._pbar  # local: napari's events may process the finished slot meanwhile
        if pbar is not None and step.stage != "loading model":
            if pbar.total != total * step.n_planes:
                pbar.total = total * step.n_planes
            delta = step.plane * total + min(step.done, total) - pbar.n
            if delta:
                pbar.update(delta)  # emits napari's value event
            pbar.set_description(f"clipseg: {step.text}")

    def _on_returned(self, result: JobResult | JobFailure) -> None:
        self.progress.setRange(0, 1)
        if isinstance(result, JobFailure):
            if result.message.startswith("live update"):
                self._set_status("The classes or thresholds changed: press Run to segment "
                                 "with them (this image has to be read again).")
            elif self._worker_live:
                self._set_status(f"not updated: {result.message}", error=True)
            else:
                self._fail(result.message)
            return
        request = result.request
        why = source_changed(request.source, self.viewer.layers)
        if why is not None:
            self._set_status(f"Result dropped: {why}; nothing was written.", error=True)
            if not request.live:
                from napari.utils.notifications import show_warning

                show_warning(f"clipseg: result dropped: {why}; nothing was written.")
            return
        mode = "keep my edits" if request.live else self.mode.currentText()
        try:
            layer, report = apply_result(self.viewer, result, mode, self.ownership)
        except ClipSegError as exc:
            self._fail(str(exc))
            return
        self.last_layer = layer
        self.legend.set_layer(layer)
        self._set_status(self._summary(result, layer, report, mode))
        self.progress.setValue(self.progress.maximum())

    def _summary(self, result: JobResult, layer: Any, report: Any, mode: str) -> str:
        tracker = self.ownership.tracker(layer, create=False)
        if result.request.live:
            head = f"Updated live: {report.written:,} pixels re-labelled"
        else:
            how = "re-labelled from cached embeddings" if result.relabelled else "segmented"
            head = (f"{how.capitalize()} {len(result.labels)} plane(s) with "
                    f"{len(result.class_names)} classes into '{layer.name}'")
            if report.created:
                head += f": {report.written:,} pixels labelled"
            else:
                head += f": {report.written:,} pixels changed"
        if report.kept:
            head += f", {report.kept:,} of your pixels kept"
        if report.released:
            head += f"; 'replace all' took back {report.released:,} pixels you had set " \
                    "(Ctrl+Z on the layer undoes it)"
        if report.untracked:
            head += f"; {report.untracked:,} pixels changed outside napari's tools were kept " \
                    "as yours"
        text = head + "."
        if tracker is not None and tracker.adopted and not result.request.live:
            text += (f" '{layer.name}' had no record of your edits: its labelled pixels count "
                     "as yours.")
        if is_toy(result.request.config.model.model):
            text += TOY_NOTE
        return text

    def _on_aborted(self) -> None:
        # Nothing to forget: the engine caches a plane's embeddings only once its window pass
        # is complete, so a cancelled run leaves either a valid cache or none.
        self.progress.setRange(0, 1)
        self.status.setText("cancelled; the viewer is unchanged")
        self.progress.setValue(0)

    def _on_errored(self, exc: Exception) -> None:
        # An unexpected error (a bug): napari's worker has already shown it as a notification
        # with its traceback; keep the widget usable and say so here.
        self.session.forget_embeddings()
        self.progress.setRange(0, 1)
        self._set_status(f"failed: {type(exc).__name__}: {exc}", error=True)

    def _on_finished(self) -> None:
        self.worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._set_running(False)
        self.live.job_finished()

    def _set_status(self, text: str, error: bool = False) -> None:
        escaped = html.escape(text, quote=False)
        # always rich text: escaped '&' and '<' then render as typed (plain text would show
        # "&amp;" for a layer named "R&D")
        self.status.setText(f"<span style='color:{ERROR}'>{escaped}</span>" if error
                            else f"<span>{escaped}</span>")

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._set_status(message, error=True)
        show_error(message)

    # -- scripting ---------------------------------------------------------------------------
    def add_model(self, name: str, model: Any) -> None:
        """Offer an already-built model (``LoadedModel`` or open_clip CLIP) as ``name``."""
        self.session.add_model(name, model)
        self.settings.add_model_name(name, getattr(self.session.loaded(name), "entry", None))
