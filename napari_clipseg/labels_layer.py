"""From engine results to napari Labels layers: the class table, its colors and names.

The output half of the layer conversion. Conventions (shared with :mod:`clipseg.formats.io`):
label 0 = unlabeled; in a fresh layer class ``k`` (0-based) has label ``k + 1``; the color of
label ``l`` is ``clipseg.formats.io.class_colors(l)[l - 1]`` unless the user recoloured it.

A result layer carries its class table in napari's own places:

- ``layer.features``: columns ``index`` (label value) and ``class`` (name), one row per label
  in the table (row 0 = unlabeled), so napari shows the class name when hovering;
- ``layer.colormap``: a :class:`napari.utils.colormaps.DirectLabelColormap`;
- ``layer.metadata["clipseg"]``: ``classes`` (every label the layer has known, with name and
  synonyms: a class that left the table keeps its label, so an undo that brings its pixels back
  also brings its name back, and a re-added class gets its old label and color), ``listed``
  (the class list of the last run), model and settings;
- ``layer.metadata["clipseg_edits"]``: the human-edit mask (:mod:`napari_clipseg.ownership`).

The table (features) holds the classes of the last run's list plus every label still painted;
a class in neither leaves it (:func:`update_class_table`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError

UNLABELED = "unlabeled"
#: Color of a label value outside the class table (e.g. painted by hand with a new label).
UNKNOWN_COLOR = (0.6, 0.6, 0.6, 1.0)
#: Metadata key of the human-edit mask (bool array of the layer's shape).
EDITS_KEY = "clipseg_edits"

Known = dict[int, tuple[str, list[str]]]  # label -> (name, synonyms)


def _rgba(color: str) -> tuple[float, float, float, float]:
    from clipseg.formats.io import hex_to_rgb

    r, g, b = hex_to_rgb(color)
    return (r / 255.0, g / 255.0, b / 255.0, 1.0)


def _hex_of(rgba: Any) -> str:
    values = np.clip(np.asarray(rgba, dtype=np.float64)[:3], 0.0, 1.0)
    return "#" + "".join(f"{round(v * 255):02x}" for v in values)


def palette_color(label: int) -> str:
    """The fixed color of ``label`` (>= 1).

    ``clipseg.formats.io.class_colors(label)[label - 1]``.
    """
    from clipseg.formats.io import class_colors

    return class_colors(label)[label - 1]


def colormap_of(colors: Mapping[int, str]) -> Any:
    """A DirectLabelColormap: 0 transparent, ``label -> colors[label]`` (``"#rrggbb"``)."""
    from napari.utils.colormaps import DirectLabelColormap

    table: dict[int | None, Any] = {None: UNKNOWN_COLOR, 0: (0.0, 0.0, 0.0, 0.0)}
    for label, color in sorted(colors.items()):
        table[int(label)] = _rgba(color)
    return DirectLabelColormap(color_dict=table, background_value=0)


def class_colormap(class_names: Sequence[str], colors: Sequence[str] | None = None) -> Any:
    """A DirectLabelColormap for labels ``1..K``: ``colors[k]`` or the palette."""
    if colors is not None and len(colors) != len(class_names):
        raise InvalidInputError(f"colors: expected one per class ({len(class_names)}), got "
                                f"{len(colors)}")
    return colormap_of({k + 1: (colors[k] if colors is not None else palette_color(k + 1))
                        for k in range(len(class_names))})


def features_of(names: Mapping[int, str]) -> dict[str, np.ndarray]:
    """Features table: row 0 = unlabeled, then one row per ``label -> name``, by label."""
    labels = [0, *sorted(names)]
    return {"index": np.asarray(labels, dtype=np.int64),
            "class": np.asarray([UNLABELED] + [names[k] for k in sorted(names)], object)}


def class_table_kwargs(class_names: Sequence[str], *,
                       synonyms: Sequence[Sequence[str]] | None = None,
                       model: str | None = None,
                       config: dict[str, Any] | None = None,
                       colors: Sequence[str] | None = None) -> dict[str, Any]:
    """Labels-layer keyword arguments for a fresh table: class ``k`` has label ``k + 1``."""
    syn = [list(s) for s in synonyms] if synonyms is not None else [[n] for n in class_names]
    known = {k + 1: (name, syn[k]) for k, name in enumerate(class_names)}
    return {"features": features_of({k: v[0] for k, v in known.items()}),
            "colormap": class_colormap(class_names, colors),
            "metadata": {"clipseg": _meta(known, list(class_names), model, config)}}


def _meta(known: Known, listed: list[str], model: str | None,
          config: dict[str, Any] | None) -> dict[str, Any]:
    return {"classes": [{"label": k, "name": known[k][0], "synonyms": list(known[k][1])}
                        for k in sorted(known)],
            "listed": list(listed), "model": model, "config": config}


def known_classes(layer: Any) -> Known:
    """Every label the layer has a name for: ``{label: (name, synonyms)}``.

    From ``metadata["clipseg"]["classes"]`` when present, else from ``features`` (a layer made
    elsewhere), with ``[name]`` as synonyms.
    """
    meta = layer.metadata.get("clipseg", {}) if isinstance(layer.metadata, dict) else {}
    entries = meta.get("classes") if isinstance(meta, dict) else None
    if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
        return {int(e["label"]): (str(e["name"]), [str(s) for s in e.get("synonyms")
                                                   or [e["name"]]]) for e in entries}
    table = layer.features
    if "class" not in table:
        return {}
    names = [str(v) for v in table["class"]]
    index = [int(i) for i in table["index"]] if "index" in table else list(range(len(names)))
    return {i: (n, [n]) for i, n in zip(index, names) if i > 0}


def table_labels(layer: Any) -> dict[int, str]:
    """The labels in the layer's table (its features), ``{label: name}``, without row 0."""
    table = layer.features
    if "class" not in table:
        return {}
    names = [str(v) for v in table["class"]]
    index = [int(i) for i in table["index"]] if "index" in table else list(range(len(names)))
    return {i: n for i, n in zip(index, names) if i > 0}


def layer_class_names(layer: Any) -> list[str]:
    """Names of labels ``1..top`` of the layer's table (``"label N"`` for gaps; [] if none)."""
    by_label = table_labels(layer)
    top = max(by_label, default=0)
    return [by_label.get(label, f"label {label}") for label in range(1, top + 1)]


def merge_classes(known: Known, new: Sequence[str], *, in_use_max: int = 0
                  ) -> tuple[Known, np.ndarray]:
    """Give every class of a result its label in the layer: known names keep theirs.

    Parameters
    ----------
    known : dict
        ``{label: (name, synonyms)}`` of the layer (:func:`known_classes`).
    new : sequence of str
        The result's ``K`` class names (label ``k + 1`` in the result).
    in_use_max : int
        Largest label value present in the layer's data; new classes are numbered above it
        and above every known label, so no label value ever changes meaning.

    Returns
    -------
    known : dict
        The input table plus the new classes.
    lut : np.ndarray
        ``(K + 1,)`` int64: ``lut[v]`` is the layer label of result label ``v`` (``lut[0] = 0``).
    """
    out = dict(known)
    by_name = {name: label for label, (name, _syn) in out.items()}
    top = max([in_use_max, *out])
    lut = np.zeros(len(new) + 1, dtype=np.int64)
    for k, name in enumerate(new):
        if name not in by_name:
            top += 1
            by_name[name] = top
            out[top] = (name, [name])
        lut[k + 1] = by_name[name]
    return out, lut


def label_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding labels ``0..n_classes``."""
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16 if n_classes <= 65535
                    else np.uint32)


def label_counts(layer: Any) -> np.ndarray:
    """Pixels per label value of the whole layer: ``counts[v]`` (length ``max + 1``)."""
    data = np.asarray(layer.data)
    if data.size == 0:
        return np.zeros(1, dtype=np.int64)
    return np.bincount(data.ravel())


def layer_colors(layer: Any, labels: Sequence[int]) -> dict[int, str]:
    """Colors (``"#rrggbb"``) the layer shows for ``labels``.

    A label the layer's direct colormap does not list gets its palette color; a layer with a
    cyclic (random) colormap reports the colors napari draws.
    """
    from napari.utils.colormaps import DirectLabelColormap

    labels = [int(v) for v in labels]
    cmap = layer.colormap
    if isinstance(cmap, DirectLabelColormap):
        table = cmap.color_dict
        return {v: _hex_of(table[v]) if v in table else palette_color(v) for v in labels}
    if not labels:
        return {}
    mapped = cmap.map(np.asarray(labels, dtype=layer.data.dtype))
    return {v: _hex_of(c) for v, c in zip(labels, np.asarray(mapped).reshape(len(labels), -1))}


def layer_class_colors(layer: Any, n_classes: int) -> list[str]:
    """Colors the layer shows for labels ``1..n_classes``."""
    colors = layer_colors(layer, range(1, n_classes + 1))
    return [colors[k] for k in range(1, n_classes + 1)]


def update_class_table(layer: Any, known: Known | None = None, *,
                       listed: Sequence[str] | None = None, model: str | None = None,
                       config: dict[str, Any] | None = None,
                       counts: np.ndarray | None = None) -> None:
    """Set the layer's table: the listed classes plus every label still painted.

    Parameters
    ----------
    layer : napari.layers.Labels
    known : dict, optional
        ``{label: (name, synonyms)}``; default :func:`known_classes`.
    listed : sequence of str, optional
        The class list of the last run (default: the one recorded in the layer).
    model, config : optional
        Recorded in the metadata (default: keep the recorded ones).
    counts : np.ndarray, optional
        :func:`label_counts` of the layer, if the caller has it.

    Notes
    -----
    A label painted but never named (e.g. a new label painted by hand) appears as
    ``"label N"``. Colors of known labels are kept; new ones get the palette color.
    """
    meta = dict(layer.metadata) if isinstance(layer.metadata, dict) else {}
    old = meta.get("clipseg") if isinstance(meta.get("clipseg"), dict) else {}
    known = known_classes(layer) if known is None else dict(known)
    listed = list(old.get("listed", [])) if listed is None else list(listed)
    counts = label_counts(layer) if counts is None else counts
    painted = {int(v) for v in np.nonzero(counts)[0] if v > 0}
    names = {label: name for label, (name, _s) in known.items()
             if name in listed or label in painted}
    for label in painted - set(known):
        names[label] = f"label {label}"
    colors = layer_colors(layer, sorted(set(known) | set(names)))  # kept: what the user sees
    layer.features = features_of(names)
    layer.colormap = colormap_of(colors)
    meta["clipseg"] = _meta(known, listed, old.get("model") if model is None else model,
                            old.get("config") if config is None else config)
    layer.metadata = meta


def rename_class(layer: Any, label: int, name: str) -> str:
    """Rename the class of ``label`` (its synonyms keep the new name first); returns the old name.

    Raises
    ------
    InvalidInputError
        Blank name, or a name another label of the layer already has.
    """
    name = name.strip()
    if not name:
        raise InvalidInputError("class name: expected a name, got an empty one")
    known = known_classes(layer)
    for other, (existing, _s) in known.items():
        if other != label and existing.lower() == name.lower():
            raise InvalidInputError(f"class name: label {other} is already called {existing!r}; "
                                    "choose another name")
    old, synonyms = known.get(label, (f"label {label}", []))
    known[label] = (name, [name] + [s for s in synonyms if s not in (old, name)])
    meta = layer.metadata.get("clipseg", {}) if isinstance(layer.metadata, dict) else {}
    listed = [name if n == old else n for n in meta.get("listed", [])]
    update_class_table(layer, known, listed=listed)
    return old


def recolor_class(layer: Any, label: int, color: str) -> None:
    """Show ``label`` in ``color`` (``"#rrggbb"``)."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = layer.colormap
    labels = set(cmap.color_dict) - {None, 0} if isinstance(cmap, DirectLabelColormap) else set()
    colors = layer_colors(layer, sorted(labels | {int(label)}))
    colors[int(label)] = _hex_of(_rgba(color))
    layer.colormap = colormap_of(colors)
