"""From engine results to napari Labels layers: class tables, colors and undoable writes.

The output half of the layer conversion. Conventions (shared with :mod:`clipseg.formats.io`):
label 0 = unlabeled; class ``k`` (0-based) has label ``k + 1``; the color of label ``k + 1`` is
``clipseg.formats.io.class_colors(K)[k]``, so a class keeps its color across runs, files and sessions.

A Labels layer made here carries its class table twice, in napari's own places:

- ``layer.features``: columns ``index`` (label value) and ``class`` (name), so napari shows the
  class name in the status bar when hovering;
- ``layer.colormap``: a :class:`napari.utils.colormaps.DirectLabelColormap` with the fixed colors;
- ``layer.metadata["clipseg"]``: synonyms, model and settings (for the writer's sidecar).

Writes into an existing layer go through ``Labels.data_setitem`` inside ``Labels.block_history()``
(napari's public undo-aware API), so a whole re-run is one undo step.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError

UNLABELED = "unlabeled"
#: Color of a label value outside the class table (e.g. painted by hand with a new label).
UNKNOWN_COLOR = (0.6, 0.6, 0.6, 1.0)
MERGE_MODES = ("fill unlabeled", "replace", "new layer")


def _rgba(color: str) -> tuple[float, float, float, float]:
    from clipseg.formats.io import hex_to_rgb

    r, g, b = hex_to_rgb(color)
    return (r / 255.0, g / 255.0, b / 255.0, 1.0)


def class_colormap(class_names: Sequence[str], colors: Sequence[str] | None = None) -> Any:
    """A DirectLabelColormap: 0 transparent, label ``k + 1`` -> ``colors[k]``.

    ``colors`` are ``"#rrggbb"`` strings, one per class; default ``class_colors(K)``.
    """
    from clipseg.formats.io import class_colors
    from napari.utils.colormaps import DirectLabelColormap

    if colors is None:
        colors = class_colors(len(class_names))
    if len(colors) != len(class_names):
        raise InvalidInputError(f"colors: expected one per class ({len(class_names)}), got "
                                f"{len(colors)}")
    table: dict[int | None, Any] = {None: UNKNOWN_COLOR, 0: (0.0, 0.0, 0.0, 0.0)}
    for k, color in enumerate(colors):
        table[k + 1] = _rgba(color)
    return DirectLabelColormap(color_dict=table, background_value=0)


def class_features(class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Features table: row ``i`` describes label ``i`` (row 0 = unlabeled)."""
    names = [UNLABELED, *class_names]
    return {"index": np.arange(len(names), dtype=np.int64), "class": np.asarray(names, object)}


def class_table_kwargs(class_names: Sequence[str], *,
                       synonyms: Sequence[Sequence[str]] | None = None,
                       model: str | None = None,
                       config: dict[str, Any] | None = None,
                       colors: Sequence[str] | None = None) -> dict[str, Any]:
    """Labels-layer keyword arguments carrying the class table (features, colormap, metadata)."""
    meta = {"class_names": list(class_names),
            "synonyms": [list(s) for s in synonyms] if synonyms is not None
            else [[n] for n in class_names],
            "model": model, "config": config}
    return {"features": class_features(class_names),
            "colormap": class_colormap(class_names, colors),
            "metadata": {"clipseg": meta}}


def layer_class_names(layer: Any) -> list[str]:
    """Class names of a Labels layer, label 1 first (from ``features``; [] when it has none)."""
    table = layer.features
    if "class" not in table:
        return []
    names = [str(v) for v in table["class"]]
    index = [int(i) for i in table["index"]] if "index" in table else list(range(len(names)))
    by_label = dict(zip(index, names))
    top = max(by_label, default=0)
    return [by_label.get(label, f"label {label}") for label in range(1, top + 1)]


def merge_class_names(existing: Sequence[str], new: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Append the new classes that the existing table lacks.

    Returns
    -------
    names : list of str
        ``existing`` followed by the names of ``new`` not already in it.
    lut : np.ndarray
        ``(len(new) + 1,)`` int64: ``lut[v]`` is the merged label of result label ``v``
        (``lut[0] = 0``).
    """
    names = list(existing)
    lut = np.zeros(len(new) + 1, dtype=np.int64)
    for k, name in enumerate(new):
        if name not in names:
            names.append(name)
        lut[k + 1] = names.index(name) + 1
    return names, lut


def label_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding labels ``0..n_classes``."""
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16 if n_classes <= 65535
                    else np.uint32)


def write_plane(layer: Any, index: tuple[int, ...], labels: np.ndarray, *,
                replace: bool) -> int:
    """Write one plane of labels into an existing Labels layer, undoably.

    Parameters
    ----------
    layer : napari.layers.Labels
        Target layer; its data has shape ``index`` axes followed by ``(H, W)``.
    index : tuple of int
        Plane index along the leading axes (``()`` for a 2-D layer).
    labels : np.ndarray
        ``(H, W)`` integer labels, already in the layer's class numbering.
    replace : bool
        False: only pixels that are 0 in the layer receive a (non-zero) new label, so painted
        corrections survive. True: every pixel takes the new value.

    Returns
    -------
    int
        Number of pixels changed. All changes go to napari's history through
        ``layer.data_setitem`` and form one undo step with the caller's ``block_history``.
    """
    data = layer.data
    if len(data.shape) != len(index) + 2 or tuple(data.shape[len(index):]) != labels.shape:
        raise InvalidInputError(f"{layer.name}: expected a layer of shape (..., "
                                f"{labels.shape[0]}, {labels.shape[1]}), got {tuple(data.shape)}")
    top = int(labels.max()) if labels.size else 0
    info = np.iinfo(data.dtype)
    if top > info.max:
        raise InvalidInputError(f"{layer.name}: its dtype {data.dtype} holds labels up to "
                                f"{info.max}, got label {top}; write to a new layer instead")
    current = np.asarray(data[tuple(index)])
    if replace:
        mask = current != labels
    else:
        mask = (current == 0) & (labels != 0)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0
    lead = tuple(np.full(ys.shape, i, dtype=np.intp) for i in index)
    values = labels[ys, xs].astype(data.dtype, copy=False)
    layer.data_setitem(lead + (ys, xs), values, refresh=True)
    return int(ys.size)


def _hex_of(rgba: Any) -> str:
    values = np.clip(np.asarray(rgba, dtype=np.float64)[:3], 0.0, 1.0)
    return "#" + "".join(f"{round(v * 255):02x}" for v in values)


def layer_class_colors(layer: Any, n_classes: int) -> list[str]:
    """Colors (``"#rrggbb"``) the layer shows for labels ``1..n_classes``.

    A label the layer's direct colormap does not list gets the fixed palette color
    (``clipseg.formats.io.class_colors``); a layer with a cyclic (random) colormap reports the colors
    napari draws.
    """
    from clipseg.formats.io import class_colors
    from napari.utils.colormaps import DirectLabelColormap

    palette = class_colors(n_classes)
    cmap = layer.colormap
    if isinstance(cmap, DirectLabelColormap):
        table = cmap.color_dict
        return [_hex_of(table[k + 1]) if (k + 1) in table else palette[k]
                for k in range(n_classes)]
    if n_classes == 0:
        return []
    mapped = cmap.map(np.arange(1, n_classes + 1, dtype=layer.data.dtype))
    return [_hex_of(c) for c in np.asarray(mapped).reshape(n_classes, -1)]


def set_class_table(layer: Any, class_names: Sequence[str], *,
                    synonyms: Sequence[Sequence[str]] | None = None, model: str | None = None,
                    config: dict[str, Any] | None = None) -> None:
    """Replace the class table (features, colormap, metadata) of an existing Labels layer.

    Labels the layer already colors keep their color; new labels get the palette color.
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors = None
    if isinstance(layer.colormap, DirectLabelColormap):
        colors = layer_class_colors(layer, len(class_names))
    kwargs = class_table_kwargs(class_names, synonyms=synonyms, model=model, config=config,
                                colors=colors)
    layer.features = kwargs["features"]
    layer.colormap = kwargs["colormap"]
    meta = dict(layer.metadata)
    meta.update(kwargs["metadata"])
    layer.metadata = meta


def layer_synonyms(layer: Any, class_names: Sequence[str]) -> list[list[str]]:
    """Synonyms recorded in the layer's metadata for ``class_names`` ([name] when unknown)."""
    meta = layer.metadata.get("clipseg", {}) if isinstance(layer.metadata, dict) else {}
    known = dict(zip(meta.get("class_names", []), meta.get("synonyms", [])))
    return [list(known.get(n, [n])) for n in class_names]
