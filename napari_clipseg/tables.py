"""Class tables that show their rows whole: tall enough for every row up to a cap, then a
scroll bar (a table cut mid-row inside the dock's own scrolling panel reads as broken)."""
from __future__ import annotations

from typing import Any

__all__ = ["fit_rows"]


def fit_rows(table: Any, max_rows: int = 8) -> None:
    """Give ``table`` (a ``QTableWidget``) the height of its header and of
    ``min(rows, max_rows)`` rows (at least one), frame included."""
    table.resizeRowsToContents()  # rows holding widgets (spin boxes) are taller
    rows = max(1, min(table.rowCount(), max_rows))
    row = table.verticalHeader().defaultSectionSize()
    heights = [table.rowHeight(r) for r in range(min(table.rowCount(), max_rows))]
    body = sum(heights) if heights else row
    body += row * (rows - len(heights))
    head = table.horizontalHeader()
    header = max(head.height(), head.sizeHint().height()) if not head.isHidden() else 0
    scroll = table.horizontalScrollBar()
    bar = scroll.sizeHint().height() if not scroll.isHidden() and scroll.maximum() > 0 else 0
    table.setFixedHeight(header + body + bar + 2 * table.frameWidth())
