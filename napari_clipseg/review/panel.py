"""The dock widget "Review a dataset": walk a folder of drafts, correct, save, move on.

Choose the image folder and the drafts folder (``clipseg batch -o``), press Open: the widget
opens the first image that is neither reviewed nor skipped as an Image layer and its draft as a
Labels layer with the class names and colours of the sidecars. Correct the draft with napari's
Labels tools; **Accept & next** saves it (labels, human-edit mask and the review state
"reviewed" in its sidecar, atomically, in the format ``clipseg batch`` writes) and opens the
next image. **Skip** records "skipped"; **Previous** and the jump box move without changing
the state (edits made are saved first, so they are never lost). An image without a draft is
segmented on arrival with the class list shown, in a worker thread; the next image is prepared
(its draft read, or its segmentation run) while you work on the current one.

The series itself (listing, states, class table, reading and writing) is
:class:`napari_clipseg.review.series.ReviewSeries`, which has no Qt; the worker jobs are
:mod:`.prepare`'s; the fixed controls and the shortcut keys are :mod:`.controls`'s and the
"Instances" box is :mod:`.things`'s.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from clipseg.errors import ClipSegError
from clipseg.formats.review import DRAFT, REVIEWED, SKIPPED

from ..labels_layer import EDITS_KEY, class_table_kwargs
from ..legend import Legend
from ..ownership import EditTracker
from .controls import FoldersBox, NavigationBox, ShortcutsBox, bind_keys, unbind_keys
from .prepare import Job, Prepared, PrepareQueue, prepare, segment
from .series import NO_DRAFT, Loaded, ReviewSeries
from .things import ThingsBox

ERROR = "#e06c75"
WARN = "#e5c07b"


class ReviewWidget(QWidget):
    """Review a folder of drafts image by image; see the module docstring.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    session : napari_clipseg.job.Session, optional
        Model cache for images without a draft (a new one by default).

    Signals
    -------
    shown : emitted with the index of the image just shown.
    """

    shown = Signal(int)

    def __init__(self, napari_viewer: Any, session: Any = None) -> None:
        super().__init__()
        from ..job import Session

        self.viewer = napari_viewer
        self.session = session if session is not None else Session()
        self.series: ReviewSeries | None = None
        self.index: int | None = None
        self.current: Loaded | None = None
        self.image_layer: Any = None
        self.labels_layer: Any = None
        self.tracker: EditTracker | None = None
        self.config: Any = None
        #: the worker jobs: what was prepared per image, the queue, the image waited for
        self.jobs = PrepareQueue(self._start_job, self._on_done)
        self._direction = 1
        self._classes_edited = False
        self._bound: list[str] = []
        self._closed = False
        self._skipped_bad: list[str] = []
        self._segmenting: int | None = None   # the image shown, while its segmentation runs
        self._segmented_config: dict[str, Any] | None = None
        self._note = ""   # what the last action did, shown once the next image is in

        # -- folders, progress and navigation ----------------------------------------------
        folders = FoldersBox()
        self.images_edit, self.drafts_edit = folders.images_edit, folders.drafts_edit
        self.open_button, self.recursive = folders.open_button, folders.recursive
        self.open_button.clicked.connect(self._open_clicked)
        nav = NavigationBox()
        self.progress, self.where = nav.progress, nav.where
        self.previous_button, self.skip_button = nav.previous_button, nav.skip_button
        self.accept_button, self.jump_edit = nav.accept_button, nav.jump_edit
        self.jump_button = nav.jump_button
        self.previous_button.clicked.connect(self.previous)
        self.skip_button.clicked.connect(self.skip)
        self.accept_button.clicked.connect(self.accept_next)
        self.jump_button.clicked.connect(lambda: self.jump(self.jump_edit.text()))
        self.jump_edit.returnPressed.connect(lambda: self.jump(self.jump_edit.text()))

        # -- classes --------------------------------------------------------------------------
        self.classes_edit = QPlainTextEdit()
        self.classes_edit.setPlaceholderText("one class per line (synonyms after ';')")
        self.classes_edit.setToolTip("The class list used to segment images without a draft "
                                     "(and by Run). Taken from the drafts' sidecars")
        self.classes_edit.setMaximumHeight(170)
        self.classes_edit.textChanged.connect(self._on_classes_typed)
        self.run_button = QPushButton("Run on this image")
        self.run_button.setToolTip("Segment this image again with the class list; pixels you "
                                   "set are kept (Shift+R)")
        self.run_button.clicked.connect(self.run)
        classes_box = QGroupBox("Classes")
        classes_layout = QVBoxLayout(classes_box)
        classes_layout.addWidget(self.classes_edit)
        classes_layout.addWidget(self.run_button)
        self.legend = Legend(napari_viewer)
        self.legend.renamed.connect(self._on_renamed)
        classes_layout.addWidget(self.legend)
        self.things_box = ThingsBox()
        self.things_box.changed.connect(self.update_instances)
        self.instances_layer: Any = None
        self._inst_timer = QTimer(self)
        self._inst_timer.setSingleShot(True)
        self._inst_timer.setInterval(300)
        self._inst_timer.timeout.connect(self.update_instances)

        # -- shortcuts and messages ----------------------------------------------------------
        keys_box = ShortcutsBox()
        self.shortcuts = keys_box.label
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setToolTip("Why corrections cannot be saved")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.body = body = QWidget()
        layout = QVBoxLayout(body)
        for w in (folders, nav, classes_box, self.things_box, keys_box):
            layout.addWidget(w)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self._scroll = scroll
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        self.message_bar = bar = QWidget()
        bar_layout = QVBoxLayout(bar)
        bar_layout.setContentsMargins(6, 4, 6, 6)
        bar_layout.addWidget(self.banner)
        bar_layout.addWidget(self.status)
        bar_layout.addWidget(self.warning)
        outer.addWidget(bar)

        self._scan_timer = QTimer(self)
        self._scan_timer.setInterval(0)
        self._scan_timer.timeout.connect(self._scan_some)
        self._bind_keys()
        self._update_controls()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        """Ask the dock for the content's width (a scroll area does not pass it on)."""
        scroll = self._scroll
        self.setMinimumWidth(self.body.minimumSizeHint().width() + 2 * scroll.frameWidth()
                             + scroll.verticalScrollBar().sizeHint().width())
        super().showEvent(event)

    # -- folders ----------------------------------------------------------------------------
    def _open_clicked(self) -> None:
        self.open_folders(self.images_edit.text(), self.drafts_edit.text(),
                          recursive=self.recursive.isChecked())

    def open_folders(self, images: str | Path, drafts: str | Path, *,
                     writable: Callable[[Path], bool] | None = None,
                     recursive: bool | None = None) -> bool:
        """Open a series and show its first image neither reviewed nor skipped.

        ``recursive`` (default: the "include subfolders" box) lists the subfolders' images
        too. ``writable`` overrides the drafts-folder write probe (tests). Returns False (with
        the reason in the status line) when the folders cannot be opened.
        """
        self._save_if_edited()
        self.images_edit.setText(str(images))
        self.drafts_edit.setText(str(drafts))
        missing = [what for what, text in (("an images folder", str(images)),
                                           ("a drafts folder", str(drafts))) if not text.strip()]
        if missing:
            self._set_status(f"Choose {' and '.join(missing)} (the folder `clipseg batch -o` "
                             "wrote, or an empty one to draft into), then Open.", error=True)
            return False
        if recursive is None:
            recursive = self.recursive.isChecked()
        self.recursive.setChecked(bool(recursive))
        try:
            series = ReviewSeries(images, drafts, writable=writable, recursive=recursive)
        except ClipSegError as exc:
            self._set_status(str(exc), error=True)
            return False
        if not len(series):
            where = "in it or its subfolders" if recursive else \
                "at the top of the folder (tick 'include subfolders' to list the others)"
            self._set_status(f"{series.images}: no images found (expected .png, .jpg, .tif "
                             f"... files {where})", error=True)
            return False
        self._reset()
        self.series = series
        self._classes_edited = False
        start = series.resume_index()
        self._scan_timer.start()
        if not series.writable:
            text = (f"The drafts folder {series.drafts} is read-only: corrections cannot be "
                    "saved, so editing is switched off. Choose a drafts folder you can write "
                    "to (or fix its permissions) before correcting anything.")
            self.banner.setText(f"<span style='color:{ERROR}'>{html.escape(text)}</span>")
            self._set_status(text, error=True)
        else:
            self.banner.setText("")
            self._set_status(f"Opened {len(series)} images.")
        self.banner.setVisible(not series.writable)
        if start is None:
            self._note = (f"Every image of {series.images} is reviewed or skipped; "
                          "showing the first.")
            start = 0
        self.show_image(start)
        return True

    def _reset(self) -> None:
        self._scan_timer.stop()
        self._drop_layers()
        self.jobs.clear()
        self.index = None
        self.current = None
        self.config = None
        self._segmenting = None
        self._skipped_bad = []
        self.warning.setText("")

    # -- the progress count -----------------------------------------------------------------
    def _scan_some(self) -> None:
        series = self.series
        if series is None:
            self._scan_timer.stop()
            return
        if series.scan(200):
            self._scan_timer.stop()
        self._sync_classes_text()
        self._update_progress()

    def _update_progress(self) -> None:
        series = self.series
        if series is None:
            self.progress.setText("No folder open.")
            self.where.setText("")
            return
        self.progress.setText(series.progress_text())
        if self.index is not None:
            item = series[self.index]
            state = series.state(self.index)
            self.where.setText(f"Image {self.index + 1} of {len(series)}: <b>"
                               f"{html.escape(item.name)}</b> ({html.escape(state)})")
        warnings = list(series.warnings) + self._skipped_bad
        self.warning.setText("<br>".join(f"<span style='color:{WARN}'>"
                                         f"{html.escape(w)}</span>" for w in warnings[-4:]))

    # -- classes ----------------------------------------------------------------------------
    def _on_classes_typed(self) -> None:
        if not self._filling_classes:
            self._classes_edited = True

    _filling_classes = False

    def _sync_classes_text(self) -> None:
        if self.series is None or self._classes_edited:
            return
        names, _colors, synonyms = self.series.table.snapshot()
        lines = ["; ".join(syn) if len(syn) > 1 else name for name, syn in zip(names, synonyms)]
        text = "\n".join(lines)
        if len(lines) == 1 and ";" in text:
            text += ","  # one class with synonyms, not several classes (see parse_classes)
        if self.classes_edit.toPlainText() != text:
            self._filling_classes = True
            try:
                self.classes_edit.setPlainText(text)
            finally:
                self._filling_classes = False

    def class_text(self) -> str:
        """The class list used for images without a draft."""
        return self.classes_edit.toPlainText()

    def set_class_text(self, text: str) -> None:
        """Set the class list (as typed by a person: kept over the drafts' list)."""
        self.classes_edit.setPlainText(text)
        self._classes_edited = True

    def _on_renamed(self, old: str, new: str) -> None:
        table = self.series.table if self.series is not None else None
        if table is None:
            return
        with table.lock:
            if old in table.names and new not in table.names:
                k = table.names.index(old)
                table.names[k] = new
                table.synonyms[k] = [new] + [s for s in table.synonyms[k] if s not in (old, new)]
        self._sync_classes_text()

    def _segment_config(self) -> Any:
        """The options for a segmentation here: set with :meth:`set_config`, else those of
        the drafts (a sidecar's), else None (the worker then takes the bundled demo model's
        defaults: importing the model code is left to the worker thread)."""
        return self.config

    def _learn_config(self, meta: dict[str, Any]) -> None:
        """Take the drafts' options (the first sidecar with a valid ``config``)."""
        if self.config is not None or not isinstance(meta.get("config"), dict):
            return
        from clipseg.config import SegmentConfig

        try:
            self.config = SegmentConfig.from_flat(meta["config"])
        except ClipSegError:
            pass

    def set_config(self, config: Any) -> None:
        """Use ``config`` (a :class:`clipseg.config.SegmentConfig`) to segment images."""
        self.config = config

    # -- preparing images in a worker (see prepare.py) ------------------------------------
    def _start_job(self, job: Job) -> tuple[Any, Any, tuple] | None:
        series = self.series
        if series is None or self._closed:
            return None
        kind, index = job
        classes, config = self.class_text(), self._segment_config()
        if kind == "segment":
            return series, segment, (self.current.image, self.session, classes, config,
                                     series[index].name)
        return series, prepare, (series, index, self.session, classes, config)

    def _on_done(self, series: ReviewSeries, job: Job, out: Any) -> None:
        if self._closed or series is not self.series:
            return  # a folder opened meanwhile: its jobs run next
        kind, index = job
        if kind == "segment":
            if self._segmenting == index:
                self._segmenting = None
                self._update_controls()
            if index == self.index and self.current is not None:
                if isinstance(out, Prepared):
                    self._set_status(f"segmentation failed: {out.error}", error=True)
                else:
                    self._apply_segmentation(out)
        else:
            self.jobs.cache[index] = out
            if isinstance(out, Prepared) and out.loaded is not None:
                self._learn_config(out.loaded.meta)
            if self.jobs.want == index:
                self._display(index, out)

    def idle(self) -> bool:
        """True when no job runs or waits and no image waits to be shown (tests)."""
        return self.jobs.idle

    # -- showing an image -------------------------------------------------------------------
    def show_image(self, index: int, direction: int = 1) -> None:
        """Show image ``index`` (prepared in the worker if it is not yet)."""
        if self.series is None:
            return
        index = max(0, min(int(index), len(self.series) - 1))
        self._direction = direction
        self.jobs.want = index
        if index in self.jobs.cache:
            self._display(index, self.jobs.cache[index])
        else:
            self._set_status(f"Opening {self.series[index].name}…")
            self._update_controls()
            self.jobs.request(index)

    def _display(self, index: int, prepared: Prepared) -> None:
        series = self.series
        self.jobs.want = None
        if prepared.loaded is None:
            self.jobs.cache.pop(index, None)
            name = series[index].name
            message = prepared.error or f"{name}: could not be read"
            self._skipped_bad.append(message)
            target = index + self._direction
            if 0 <= target < len(series) and len(self._skipped_bad) < len(series):
                self._set_status(message, error=True)
                self.show_image(target, self._direction)
            else:
                self._set_status(message + " (no other image in that direction)", error=True)
                self._update_progress()
                self._update_controls()
            return
        self._drop_layers()
        loaded = prepared.loaded
        self.index, self.current = index, loaded
        self._segmenting = None
        self._segmented_config = None
        item = series[index]
        self.image_layer = self.viewer.add_image(loaded.image, name=item.name,
                                                 rgb=loaded.image.ndim == 3)
        labels = loaded.labels if loaded.labels is not None else \
            np.zeros(loaded.image.shape[:2], dtype=series.label_dtype())
        if labels.dtype != series.label_dtype():
            labels = labels.astype(series.label_dtype())
        kwargs = self._table_kwargs(loaded.meta)
        kwargs["metadata"][EDITS_KEY] = loaded.edits.copy()
        self.labels_layer = self.viewer.add_labels(labels.copy(), name=f"{item.stem} draft",
                                                   opacity=0.6, **kwargs)
        self.tracker = EditTracker(self.labels_layer)
        self.labels_layer.events.paint.connect(self._schedule_instances)
        self.labels_layer.events.set_data.connect(self._schedule_instances)
        self.labels_layer.editable = series.writable
        self.legend.set_layer(self.labels_layer)
        self.viewer.layers.selection.active = self.labels_layer
        self.jobs.cache.pop(index, None)
        note, self._note = self._note, ""
        state = series.state(index)
        if loaded.warning:
            self._set_status(" ".join(filter(None, (note, loaded.warning))), warn=True)
        elif series.writable:
            if loaded.labels is None:
                what = "no draft yet: segmenting…"
            elif state == REVIEWED:
                what = "reviewed already; corrections made now are saved when you leave it"
            elif state == SKIPPED:
                what = "skipped earlier; Accept & next reviews it after all"
            else:
                what = "draft loaded; correct it, then Accept & next"
            self._set_status(" ".join(filter(None, (note, f"{item.name}: {what}"))))
        else:
            self._set_status(f"{item.name}: shown for viewing only (the drafts folder is "
                             "read-only)")
        if loaded.labels is None and prepared.segmented is not None:
            self._apply_segmentation(prepared.segmented)
        elif loaded.labels is None:
            self._segment_current()
        self._sync_classes_text()
        self._update_things()
        self._update_progress()
        self._update_controls()
        self._prefetch(index)
        self.shown.emit(index)

    def _prefetch(self, index: int) -> None:
        series = self.series
        nxt = index + 1
        if series is not None and nxt < len(series) and nxt not in self.jobs.cache:
            self.jobs.request(nxt)

    def _table_kwargs(self, meta: dict[str, Any]) -> dict[str, Any]:
        names, colors, synonyms = self.series.table.snapshot()
        return class_table_kwargs(names, synonyms=synonyms, model=meta.get("model"),
                                  config=meta.get("config"), colors=colors)

    def _refresh_table(self) -> None:
        layer = self.labels_layer
        if layer is None:
            return
        kwargs = self._table_kwargs(self.current.meta if self.current else {})
        meta = dict(layer.metadata)
        meta.update(kwargs["metadata"])
        layer.features = kwargs["features"]
        layer.colormap = kwargs["colormap"]
        layer.metadata = meta
        self.legend.set_layer(layer)

    def _drop_layers(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        self._inst_timer.stop()
        for layer in (self.instances_layer, self.labels_layer, self.image_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.legend.set_layer(None)
        self.labels_layer = self.image_layer = None
        self.instances_layer = None

    # -- segmenting --------------------------------------------------------------------------
    def run(self) -> None:
        """Segment the current image again with the class list (pixels you set are kept)."""
        if self.current is None:
            return
        self._segment_current()

    def _segment_current(self) -> None:
        names = self._class_names()
        name = self.series[self.index].name
        if not names:
            self._set_status(f"{name}: type the classes (one per line), then Run to segment "
                             "it", warn=True)
            return
        self._set_status(f"{name}: segmenting with {len(names)} classes…")
        self._segmenting = self.index
        self._update_controls()
        self.jobs.request(self.index, "segment")

    def _class_names(self) -> list[str]:
        from clipseg.text import parse_classes

        try:
            return [s.name for s in parse_classes(self.class_text())]
        except ClipSegError:
            return []

    def _apply_segmentation(self, result: Any) -> None:
        from ..job import JobFailure

        if isinstance(result, JobFailure):
            self._set_status(f"segmentation failed: {result.message}", error=True)
            return
        series, layer = self.series, self.labels_layer
        labels = result.labels[()]
        lut = np.zeros(len(result.class_names) + 1, dtype=np.int64)
        for k, (name, syn) in enumerate(zip(result.class_names, result.synonyms)):
            lut[k + 1] = series.table.add(name, synonyms=syn)
        mapped = lut[labels].astype(series.label_dtype())
        if layer.data.dtype != mapped.dtype:
            self._set_status("the class table outgrew the layer's label type; reopen the image",
                             error=True)
            return
        self._refresh_table()
        with self.tracker.machine_write() as writer:
            writer.write_plane((), mapped)
        self.current.meta.setdefault("model", result.model_name)
        self._segmented_config = result.request.config.to_flat()
        kept = writer.report.kept
        self._set_status(f"{series[self.index].name}: segmented with "
                         f"{len(result.class_names)} classes"
                         + (f"; {kept:,} of your pixels kept" if kept else "") + ".")
        self._sync_classes_text()
        self._update_things()
        self._update_controls()

    # -- saving and moving ------------------------------------------------------------------
    def _edited(self) -> bool:
        cur, layer = self.current, self.labels_layer
        if cur is None or layer is None:
            return False
        base = cur.labels if cur.labels is not None else None
        data = np.asarray(layer.data)
        return bool(self.tracker.human.any() and not np.array_equal(self.tracker.human,
                                                                      cur.edits)) or \
            (base is not None and not np.array_equal(data, base))

    def _human_mask(self) -> np.ndarray:
        tracker = self.tracker
        data = np.asarray(self.labels_layer.data)
        stray = (data != tracker.machine) & ~tracker.human  # changed outside napari's history
        if stray.any():
            tracker.human[stray] = True
        return tracker.human.copy()

    def save_current(self, state: str) -> list[Path]:
        """Save the current image's labels, edit mask and review ``state``."""
        series, cur = self.series, self.current
        meta = dict(cur.meta)
        config = meta.get("config") or self._segmented_config
        options = self.instance_options()
        instances = (self.compute_instances(), options) if options is not None else None
        written = series.save(self.index, np.asarray(self.labels_layer.data),
                              self._human_mask(), state, meta=meta,
                              model=meta.get("model"), config=config, instances=instances)
        self.jobs.cache.pop(self.index, None)
        return written

    def _can_save(self) -> bool:
        if self.series is None or self.current is None:
            return False
        if self._segmenting == self.index:
            self._set_status(f"{self.series[self.index].name}: still segmenting; accept or "
                             "skip once the draft is in", warn=True)
            return False
        if not self.series.writable:
            self._set_status(f"The drafts folder {self.series.drafts} is read-only: nothing "
                             "can be saved. Choose a drafts folder you can write to.",
                             error=True)
            return False
        return True

    def _save_or_report(self, state: str) -> bool:
        try:
            self.save_current(state)
        except (ClipSegError, OSError) as exc:
            self._set_status(f"not saved: {exc}", error=True)
            return False
        return True

    def _save_if_edited(self) -> bool:
        """Before leaving an image: save edits made (the state stays what it was)."""
        if self.current is None or self.series is None or not self._edited():
            return True
        if not self.series.writable:
            return True  # editing was off
        state = self.series.state(self.index)
        return self._save_or_report(DRAFT if state == NO_DRAFT else state)

    def accept_next(self) -> None:
        """Save the current image as reviewed and open the next one."""
        if not self._can_save() or self.jobs.want is not None:
            return
        if not self._save_or_report(REVIEWED):
            return
        name = self.series[self.index].name
        self._advance(f"{name}: saved as reviewed.")

    def skip(self) -> None:
        """Record the current image as skipped (its edits saved too) and open the next one."""
        if not self._can_save() or self.jobs.want is not None:
            return
        if not self._save_or_report(SKIPPED):
            return
        self._advance(f"{self.series[self.index].name}: skipped.")

    def _advance(self, message: str) -> None:
        index, series = self.index, self.series
        self._update_progress()
        if index + 1 < len(series):
            self._note = f"{message} {series.progress_text()}."
            self.show_image(index + 1, 1)
            return
        first = series.resume_index()
        if first is None:
            self._note = (f"{message} Every image is reviewed or skipped "
                          f"({series.progress_text()}): the dataset is ready for "
                          f"`clipseg export {series.drafts} -o OUT`.")
        else:
            self._note = (f"{message} That was the last image; {series.progress_text()}. "
                          f"Not reviewed yet: {series[first].name} (jump to {first + 1}).")
        self._reload_current()

    def _reload_current(self) -> None:
        index = self.index
        self._drop_layers()
        self.current = None
        self.jobs.cache.pop(index, None)
        self.show_image(index, -1)

    def previous(self) -> None:
        """Open the previous image (edits made here are saved first)."""
        if self.series is None or self.index is None or self.index == 0:
            return
        if self._save_if_edited():
            self.show_image(self.index - 1, -1)

    def jump(self, text: str) -> None:
        """Open the image at a position (1-based) or with a name (edits are saved first)."""
        if self.series is None:
            return
        try:
            target = self.series.find(text)
        except ClipSegError as exc:
            self._set_status(str(exc), error=True)
            return
        if self._save_if_edited():
            self.show_image(target, 1 if self.index is None or target >= self.index else -1)

    # -- paint helpers ----------------------------------------------------------------------
    def cycle_class(self, step: int = 1) -> None:
        """Paint with the next (``step=1``) or previous class of the table."""
        layer, series = self.labels_layer, self.series
        if layer is None or series is None or not len(series.table):
            return
        n = len(series.table)
        current = int(layer.selected_label)
        label = ((current - 1 + step) % n) + 1 if 1 <= current <= n else 1
        layer.selected_label = label
        if layer.mode not in ("paint", "fill", "polygon"):
            layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self._set_status(f"painting with {series.table.names[label - 1]} (label {label})")

    def toggle_draft(self) -> None:
        """Show or hide the draft layer."""
        if self.labels_layer is not None:
            self.labels_layer.visible = not self.labels_layer.visible

    # -- instances ------------------------------------------------------------------------
    @property
    def things(self) -> dict[str, Any]:
        """Class name -> its "thing" checkbox."""
        return self.things_box.boxes

    @property
    def min_area(self) -> Any:
        return self.things_box.min_area

    @property
    def watershed(self) -> Any:
        return self.things_box.watershed

    def _table_names(self) -> list[str]:
        return list(self.series.table.names) if self.series is not None else []

    def _update_things(self) -> None:
        """One checkbox per class of the table; the draft's own choice when it has one."""
        entry = self.current.meta.get("instances") if self.current is not None else None
        self.things_box.show_classes(self._table_names(), entry)
        self.update_instances()

    def set_things(self, names: list[str]) -> None:
        """Mark ``names`` as "things" (split into instances), the others not."""
        self.things_box.choose(names)
        self._update_things()

    def instance_options(self) -> Any:
        """The current "things" and splitting options (None when no class is a thing)."""
        return self.things_box.options(self._table_names())

    def compute_instances(self) -> np.ndarray | None:
        """Object ids of the current (corrected) draft, or None when no class is a thing."""
        from clipseg.instances import instance_map

        options = self.instance_options()
        if options is None or self.labels_layer is None:
            return None
        _names, labels = self.things_box.things_of(self._table_names())
        objects, _owner = instance_map(np.asarray(self.labels_layer.data), labels,
                                       min_area=options.min_area, watershed=options.watershed)
        return objects

    def _schedule_instances(self, _event: Any = None) -> None:
        if self.things_box.any_checked:
            self._inst_timer.start()

    def update_instances(self) -> None:
        """Recompute the Instances layer from the draft as it is now."""
        self._inst_timer.stop()
        try:
            objects = self.compute_instances()
        except ClipSegError as exc:
            self._set_status(f"instances: {exc}", error=True)
            return
        layer = self.instances_layer
        if objects is None:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            self.instances_layer = None
            return
        if layer is None or layer not in self.viewer.layers:
            stem = self.series[self.index].stem
            self.instances_layer = self.viewer.add_labels(objects, name=f"{stem} instances",
                                                          opacity=0.5)
            self.viewer.layers.selection.active = self.labels_layer
        else:
            layer.data = objects
        self.things_box.note.setToolTip(f"{int(objects.max())} objects in this image")

    # -- keys -------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        self._bound, refused = bind_keys(self.viewer, {
            "accept_next": self.accept_next, "previous": self.previous, "skip": self.skip,
            "run": self.run, "next_class": lambda: self.cycle_class(1),
            "previous_class": lambda: self.cycle_class(-1), "toggle_draft": self.toggle_draft})
        if refused:
            self._set_status(f"shortcuts {', '.join(refused)} are taken by another plugin; "
                             "use the buttons", warn=True)

    def unbind_keys(self) -> None:
        """Give the review's keys back to the viewer."""
        unbind_keys(self.viewer, self._bound)
        self._bound = []

    def close_review(self) -> None:
        """Stop: unbind the keys, save pending edits, stop the scan (the layers stay)."""
        if self._closed:
            return
        self._save_if_edited()
        self._closed = True
        self.unbind_keys()
        self._scan_timer.stop()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        self.close_review()
        super().closeEvent(event)

    def event(self, event: Any) -> bool:
        # napari's remove_dock_widget detaches the widget (setParent(None)) without closing
        if event.type() == QEvent.Type.ParentChange and self.parent() is None \
                and self._bound:
            self.close_review()
        return super().event(event)

    # -- status -------------------------------------------------------------------------------
    def _update_controls(self) -> None:
        ready = self.current is not None and self.jobs.want is None
        writable = self.series is not None and self.series.writable
        drafted = self._segmenting is None or self._segmenting != self.index
        for button in (self.accept_button, self.skip_button):
            button.setEnabled(ready and writable and drafted)
        self.previous_button.setEnabled(ready and self.index is not None and self.index > 0)
        self.run_button.setEnabled(ready and writable)
        self.jump_button.setEnabled(self.series is not None)

    def _set_status(self, text: str, error: bool = False, warn: bool = False) -> None:
        escaped = html.escape(text, quote=False)
        color = ERROR if error else WARN if warn else None
        self.status.setText(f"<span style='color:{color}'>{escaped}</span>" if color
                            else f"<span>{escaped}</span>")

