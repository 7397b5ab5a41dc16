"""Who set each pixel of a result layer: the machine or a person.

One :class:`EditTracker` per result Labels layer keeps two arrays of the layer's shape:

``machine``
    The machine's last output, in the layer's label numbering. Where a person set a pixel it
    keeps the machine value that was overridden.
``human``
    True where a person painted, filled or erased the pixel (an erased pixel is 0 in the layer
    and True here: "unlabeled", said by a person). It is the very array stored as
    ``layer.metadata["clipseg_edits"]``, so the writer saves it as the human-edit mask of the
    label file format (:mod:`clipseg.formats.io`) and the reader brings it back.

Invariant: where ``human`` is False the layer shows ``machine``. A human edit is read from
each history item napari reports (``layer.events.paint``, emitted once per paint stroke, fill
or erase, with the pixels and their new values): a pixel whose new value differs from the
machine's becomes human-owned. An edit that bypassed napari's history (a script writing
``layer.data``) is found by comparing the layer with ``machine`` before the next machine
write.

Machine writes go through :meth:`EditTracker.machine_write`: in the default mode only pixels
that are not human-owned are rewritten; :meth:`MachineWriter.write_plane` with
``replace=True`` ("replace all") rewrites every pixel and hands them all back to the machine.
Each write is one step of napari's undo history.

Undo and redo: napari restores the pixels; the tracker restores its own two arrays. It keeps
its own mirror of the history: for each napari history item since it started (every human
edit and machine write), the pixels the item changed with their values before and after, and
the ownership changes it made. napari's undo and redo emit ``layer.events.set_data``; the
tracker then looks at the pixels of its newest applied step: if they show their "before"
values the step was undone (its ownership changes are reverted and it moves to the redo
mirror); if instead the newest undone step's pixels show their "after" values it was redone.
Only public napari API is used (the history stacks themselves are private).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError

from .labels_layer import EDITS_KEY


@dataclass
class _Step:
    """One napari history item: the pixels it changed and the ownership changes it made.

    ``idx`` / ``before`` / ``after``: flat indices of the pixels whose value the item changed,
    with their values before and after it (how an undo or redo is recognised). ``h_*`` and
    ``m_*``: flat indices with old and new values of ``human`` and ``machine``.
    """

    idx: np.ndarray
    before: np.ndarray
    after: np.ndarray
    h_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    h_old: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    h_new: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    m_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    m_old: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m_new: np.ndarray = field(default_factory=lambda: np.zeros(0))


#: Most steps kept in the tracker's history mirror (napari keeps fewer by default).
MAX_STEPS = 500


def _atom_changes(atom: Any, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Flat indices, old and new values of one napari history atom (None: an unknown kind).

    napari records an atom before writing it, so the changes are read from the atom, not from
    the layer: a mask-based edit (brush, fill, polygon: ``slice_key``, ``mask``, ``old_values``,
    ``new_value``) or a ``data_setitem`` triple ``(indices, old values, new values)``.
    """
    nd = len(shape)
    key = getattr(atom, "slice_key", None)
    if isinstance(key, tuple) and len(key) == nd and hasattr(atom, "new_value"):
        ranges = []
        for ax, sl in enumerate(key):
            start, stop = (sl.indices(shape[ax])[:2] if isinstance(sl, slice)
                           else (int(sl), int(sl) + 1))
            ranges.append(np.arange(start, stop))
        mask = getattr(atom, "mask", None)
        box = tuple(len(r) for r in ranges)
        local = np.nonzero(mask.reshape(box)) if mask is not None \
            else tuple(np.indices(box).reshape(nd, -1))
        full = tuple(r[ix] for r, ix in zip(ranges, local))
        idx = np.ravel_multi_index(full, shape).astype(np.int64)
        old = np.asarray(atom.old_values).ravel()
        return idx, old, np.full(idx.shape, atom.new_value, dtype=old.dtype)
    if isinstance(atom, tuple) and len(atom) == 3 and isinstance(atom[0], tuple) \
            and len(atom[0]) == nd:
        full = tuple(np.asarray(ix, dtype=np.int64).ravel() for ix in atom[0])
        idx = np.ravel_multi_index(full, shape).astype(np.int64)
        old = np.asarray(atom[1]).ravel()
        return idx, old, np.broadcast_to(np.asarray(atom[2]).ravel() if np.ndim(atom[2])
                                         else np.asarray(atom[2]), idx.shape)
    return None


def _item_changes(item: Any, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Flat indices with the values before and after a whole history item.

    A pixel written by several atoms (a stroke crossing itself) has the old value of its first
    write and the new value of its last; pixels the item left as they were are dropped.
    """
    parts = []
    for atom in item:
        change = _atom_changes(atom, shape)
        if change is None:
            return None
        parts.append(change)
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    if len(parts) == 1:  # one atom writes each of its pixels once (no sorting needed)
        idx, old, new = parts[0]
        moved = old != new
        return idx[moved], old[moved], np.asarray(new)[moved]
    idx = np.concatenate([p[0] for p in parts])
    old = np.concatenate([np.asarray(p[1]) for p in parts])
    new = np.concatenate([np.asarray(p[2]) for p in parts])
    uniq, first = np.unique(idx, return_index=True)
    _, last_rev = np.unique(idx[::-1], return_index=True)
    last = idx.size - 1 - last_rev
    before, after = old[first], new[last]
    moved = before != after
    return uniq[moved], before[moved], after[moved]


def _flat(mask: np.ndarray, region: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices into an array of ``shape`` of the True entries of ``mask`` (= region)."""
    local = np.nonzero(mask)
    starts = [s.start or 0 for s in region]
    full = tuple(ix + st for ix, st in zip(local, starts))
    return np.ravel_multi_index(full, shape).astype(np.int64) if full and full[0].size \
        else np.zeros(0, np.int64)


class EditTracker:
    """Ownership of the pixels of one Labels layer; see the module docstring.

    Parameters
    ----------
    layer : napari.layers.Labels
        A layer with numpy data.

    Attributes
    ----------
    machine : np.ndarray
        The layer's shape and dtype.
    human : np.ndarray
        bool, the layer's shape; the same object as ``layer.metadata["clipseg_edits"]``.
    adopted : bool
        True when the layer had no edit record: its labelled pixels were taken as a person's.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.changed: list[Callable[[], None]] = []
        self._applied: list[_Step] = []   # napari's undo stack, as far as it is known here
        self._undone: list[_Step] = []    # napari's redo stack
        self._writing: MachineWriter | None = None
        self._item: Any = None
        self._reset()
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_set_data)
        layer.events.data.connect(self._on_data)

    def _reset(self) -> None:
        data = np.asarray(self.layer.data)
        mask = self.layer.metadata.get(EDITS_KEY) if isinstance(self.layer.metadata,
                                                                dict) else None
        if isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == data.shape:
            self.human, self.adopted = mask, False
        else:  # no record: never overwrite what may be a person's work
            self.human, self.adopted = data != 0, True
        self.machine = data.copy()
        self._applied, self._undone = [], []
        meta = dict(self.layer.metadata)
        meta[EDITS_KEY] = self.human
        self.layer.metadata = meta

    def close(self) -> None:
        """Stop listening to the layer."""
        for event, slot in ((self.layer.events.paint, self._on_paint),
                            (self.layer.events.set_data, self._on_set_data),
                            (self.layer.events.data, self._on_data)):
            event.disconnect(slot)

    def _notify(self) -> None:
        for callback in list(self.changed):
            callback()

    # -- queries -------------------------------------------------------------------------------
    def human_count(self) -> int:
        """Number of human-owned pixels."""
        return int(self.human.sum())

    def _data(self) -> np.ndarray:
        data = self.layer.data
        if not isinstance(data, np.ndarray):
            raise InvalidInputError(f"{self.layer.name}: expected labels held in memory (a numpy "
                                    f"array), got {type(data).__name__}; write to a new layer")
        if data.shape != self.machine.shape:
            self._reset()
        return data

    # -- human edits ---------------------------------------------------------------------------
    def _on_paint(self, event: Any) -> None:
        item = event.value
        if self._writing is not None:  # the machine's own write being committed
            self._item = item
            return
        data = self._data()
        changes = _item_changes(item, data.shape)
        if changes is None:  # an edit of a kind not known here: found before the next write
            self._undone.clear()
            return
        idx, before, after = changes
        flips = (after != self.machine.flat[idx]) & ~self.human.flat[idx]
        h_idx = idx[flips]
        self.human.flat[h_idx] = True
        self._push(_Step(idx, before, after, h_idx=h_idx, h_old=np.zeros(h_idx.size, bool),
                         h_new=np.ones(h_idx.size, bool)))
        if h_idx.size:
            self._notify()

    def _push(self, step: _Step) -> None:
        """A new napari history item: napari has dropped its redo stack, so does the mirror.

        An item that changed no pixel overall (a stroke that painted a pixel back) changes no
        ownership either and its undo cannot be seen: it is left out of the mirror.
        """
        self._undone.clear()
        if step.idx.size:
            self._applied.append(step)
            del self._applied[:-MAX_STEPS]

    def _claim_untracked(self, plane: tuple[int, ...]) -> int:
        """Mark as human-owned the pixels of ``plane`` changed outside napari's history."""
        data = self._data()
        stray = (np.asarray(data[plane]) != self.machine[plane]) & ~self.human[plane]
        count = int(stray.sum())
        if count:
            self.human[plane][stray] = True
        return count

    def _on_data(self, _event: Any = None) -> None:
        if self._writing is None and self.layer.data.shape != self.machine.shape:
            self._reset()
            self._notify()

    # -- undo / redo ---------------------------------------------------------------------------
    def _on_set_data(self, _event: Any = None) -> None:
        if self._writing is None and self.sync():
            self._notify()

    def sync(self) -> bool:
        """Follow napari's undo/redo by the pixels; True if ownership changed.

        The newest applied step showing its "before" pixels was undone; else the newest
        undone step showing its "after" pixels was redone (one undo or redo per refresh, but
        several are followed in turn).
        """
        data = self.layer.data
        if not isinstance(data, np.ndarray) or data.shape != self.machine.shape:
            return False
        changed = False
        while True:
            if self._applied and self._shows(data, self._applied[-1], "before"):
                step = self._applied.pop()
                self._replay(step, forward=False)
                self._undone.append(step)
            elif self._undone and self._shows(data, self._undone[-1], "after"):
                step = self._undone.pop()
                self._replay(step, forward=True)
                self._applied.append(step)
            else:
                return changed
            changed = True

    @staticmethod
    def _shows(data: np.ndarray, step: _Step, which: str) -> bool:
        return bool(step.idx.size) and np.array_equal(data.flat[step.idx], getattr(step, which))

    def _replay(self, step: _Step, *, forward: bool) -> None:
        self.human.flat[step.h_idx] = step.h_new if forward else step.h_old
        self.machine.flat[step.m_idx] = step.m_new if forward else step.m_old

    # -- machine writes ------------------------------------------------------------------------
    @contextmanager
    def machine_write(self) -> Iterator[MachineWriter]:
        """Group machine writes into one undo step; yields a :class:`MachineWriter`.

        Prepare every plane before entering (nothing in the block should fail half-way).
        """
        if self._writing is not None:
            raise InvalidInputError(f"{self.layer.name}: a machine write is already under way")
        writer = MachineWriter(self)
        self._writing, self._item = writer, None
        try:
            with self.layer.block_history():
                yield writer
        finally:
            self._writing = None
        step = writer.finish()
        item, self._item = self._item, None
        changes = None if item is None else _item_changes(item, self.machine.shape)
        if changes is not None:  # napari recorded a history item: the step is undoable
            step.idx, step.before, step.after = changes
            self._push(step)
        elif item is not None:
            self._undone.clear()
        self._notify()


@dataclass
class WriteReport:
    """What one machine write did: pixels rewritten, human-owned pixels kept, edits found,
    human-owned pixels handed back to the machine ("replace all"); ``created``: a new layer."""

    written: int = 0
    kept: int = 0
    untracked: int = 0
    released: int = 0
    created: bool = False


class MachineWriter:
    """Writes planes for :meth:`EditTracker.machine_write`; collects the ownership changes."""

    def __init__(self, tracker: EditTracker) -> None:
        self.tracker, self.report = tracker, WriteReport()
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                                     ("h_idx", "h_old", "h_new", "m_idx",
                                                      "m_old", "m_new")}

    def write_plane(self, plane: tuple[int, ...], labels: np.ndarray, *,
                    replace: bool = False) -> None:
        """Write ``labels`` ``(H, W)`` (the layer's numbering) into ``plane`` of the layer.

        ``replace=False``: every machine-owned pixel takes the new label, no human-owned pixel
        changes. ``replace=True``: every pixel takes the new label and becomes machine-owned.
        """
        tr = self.tracker
        layer, data = tr.layer, tr._data()
        if data.ndim != len(plane) + 2 or tuple(data.shape[len(plane):]) != labels.shape:
            raise InvalidInputError(f"{layer.name}: expected a layer of shape (..., "
                                    f"{labels.shape[0]}, {labels.shape[1]}), got {data.shape}")
        top = int(labels.max()) if labels.size else 0
        if top > np.iinfo(data.dtype).max:
            raise InvalidInputError(f"{layer.name}: its labels hold values up to "
                                    f"{np.iinfo(data.dtype).max}, got label {top}; write to a "
                                    "new layer instead")
        labels = labels.astype(data.dtype, copy=False)
        self.report.untracked += tr._claim_untracked(plane)
        current = np.asarray(data[plane])
        human, machine = tr.human[plane], tr.machine[plane]
        region = tuple(slice(i, i + 1) for i in plane) + (slice(None), slice(None))

        def flat(mask: np.ndarray) -> np.ndarray:
            return _flat(mask.reshape((1,) * len(plane) + mask.shape), region, data.shape)

        if replace:
            write = current != labels
            released = human.copy()
            n = int(released.sum())
            self._add("h", flat(released), np.ones(n, bool), np.zeros(n, bool))
            self.report.released += n
            m_change = machine != labels
        else:
            write = ~human & (current != labels)
            m_change = ~human & (machine != labels)
            self.report.kept += int((human & (current != labels)).sum())
        self._add("m", flat(m_change), machine[m_change], labels[m_change])
        machine[m_change] = labels[m_change]
        if replace:
            human[...] = False
        ys, xs = np.nonzero(write)
        if ys.size:
            lead = tuple(np.full(ys.shape, i, dtype=np.intp) for i in plane)
            layer.data_setitem(lead + (ys, xs), labels[ys, xs], refresh=True)
        self.report.written += int(ys.size)

    def _add(self, which: str, idx: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
        self._parts[f"{which}_idx"].append(idx)
        self._parts[f"{which}_old"].append(np.asarray(old))
        self._parts[f"{which}_new"].append(np.asarray(new))

    def finish(self) -> _Step:
        """The ownership changes of every plane written, as one step."""
        empty = np.zeros(0, np.int64)
        step = _Step(empty, empty, empty)
        for name, parts in self._parts.items():
            if parts:
                setattr(step, name, np.concatenate(parts))
        return step


class Ownership:
    """The edit trackers of a viewer's result layers, attached as layers come and go.

    A Labels layer that arrives with ``metadata["clipseg_edits"]`` (made by the widget or read
    from a file) is tracked from the start; any other is tracked from the first run that writes
    into it (:meth:`tracker`), its labelled pixels then counting as a person's.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._trackers: dict[Any, EditTracker] = {}
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in viewer.layers:
            self._on_inserted(layer)

    def _on_inserted(self, event_or_layer: Any) -> None:
        from napari.layers import Labels

        layer = getattr(event_or_layer, "value", event_or_layer)
        if isinstance(layer, Labels) and isinstance(layer.metadata, dict) \
                and EDITS_KEY in layer.metadata and isinstance(layer.data, np.ndarray):
            self.tracker(layer)

    def _on_removed(self, event: Any) -> None:
        tracker = self._trackers.pop(event.value.unique_id, None)
        if tracker is not None:
            tracker.close()

    def tracker(self, layer: Any, create: bool = True) -> EditTracker | None:
        """The tracker of ``layer`` (made on first use unless ``create`` is False)."""
        tracker = self._trackers.get(layer.unique_id)
        if tracker is None and create:
            mask = layer.metadata.get(EDITS_KEY) if isinstance(layer.metadata, dict) else None
            if any(mask is other.human for other in self._trackers.values()):
                meta = dict(layer.metadata)  # a duplicated layer: its own copy of the mask
                meta[EDITS_KEY] = mask.copy()
                layer.metadata = meta
            tracker = self._trackers[layer.unique_id] = EditTracker(layer)
        return tracker

    def close(self) -> None:
        """Detach from the viewer and every layer."""
        self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        for tracker in self._trackers.values():
            tracker.close()
        self._trackers.clear()
