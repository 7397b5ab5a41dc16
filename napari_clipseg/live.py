"""Live re-labelling: class-list and threshold edits update the result without pressing Run.

Once a plane's window embeddings are cached (after a Run), editing the class list, a synonym,
the prompts, the global threshold or a per-class threshold re-labels that plane from the cache
after a short pause (:attr:`LiveRelabel.delay_ms`: several keystrokes cost one update). No ViT
pass runs and no model loads: an update that would need either is skipped and the status says
to press Run. The update writes like a default re-run ("keep my edits": every machine-owned
pixel follows, no human-owned pixel changes), whatever the output mode, and is one undo step.

A checkbox switches it off (for huge images, where even re-labelling takes a while).
"""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, QTimer

#: Pause after the last edit before the update runs (milliseconds).
DELAY_MS = 300


class LiveRelabel(QObject):
    """Debounces edits into live updates of ``widget`` (a :class:`ClipSegWidget`)."""

    def __init__(self, widget: Any, delay_ms: int = DELAY_MS) -> None:
        super().__init__(widget)
        self.widget = widget
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.fire)
        self.pending = False
        self.updates = 0  # live updates started (for the status line and tests)

    @property
    def delay_ms(self) -> int:
        return self.timer.interval()

    @delay_ms.setter
    def delay_ms(self, value: int) -> None:
        self.timer.setInterval(int(value))

    @property
    def enabled(self) -> bool:
        return self.widget.live_box.isChecked()

    def schedule(self, *_args: Any) -> None:
        """An edit happened: update after the pause, if live updates are on."""
        if self.enabled:
            self.timer.start()

    def fire(self) -> None:
        """Start the update now (or once the running job is done)."""
        if not self.enabled:
            return
        if self.widget.worker is not None:
            self.pending = True
            return
        if self.widget.start_live() is not None:
            self.updates += 1

    def job_finished(self) -> None:
        """Called when a job ends: run an update that waited for it."""
        if self.pending:
            self.pending = False
            self.timer.start()
