"""Apply a finished :class:`~napari_clipseg.job.JobResult` to the viewer (main thread only).

Three ways to write, chosen explicitly by the user (:data:`MERGE_MODES`):

``"keep my edits"`` (default)
    In the existing ``"<image> labels"`` layer every pixel the machine set takes the new
    result, and no pixel a person painted, filled or erased changes
    (:mod:`napari_clipseg.ownership`). One undo step.
``"replace all"``
    Every pixel of the segmented planes takes the new label and goes back to the machine.
    One undo step (*Ctrl+Z* on the layer brings the edits, and their ownership, back).
``"new layer"``
    Always add a new Labels layer (napari makes the name unique).

The result is renumbered into the layer's class table by name: a class keeps its label and
color, a new class gets a label of its own; classes neither listed nor painted leave the table
(:func:`napari_clipseg.labels_layer.update_class_table`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError

from .job import JobResult
from .labels_layer import (
    EDITS_KEY,
    class_table_kwargs,
    known_classes,
    label_counts,
    label_dtype,
    layer_colors,
    merge_classes,
    table_labels,
    update_class_table,
)
from .ownership import Ownership, WriteReport

MERGE_MODES = ("keep my edits", "replace all", "new layer")


def labels_layer_name(image_name: str) -> str:
    """Name of the result layer of image layer ``image_name``."""
    return f"{image_name} labels"


def _units_kwargs(source: Any) -> dict[str, Any]:
    """``units=`` of the source layer for a layer placed like it (nothing when it has none)."""
    units = getattr(source, "units", ())
    return {"units": tuple(units)} if units else {}


def find_target(viewer: Any, image_name: str, label_shape: tuple[int, ...]) -> Any | None:
    """The existing Labels layer a re-run writes into, or None (a new layer is needed)."""
    from napari.layers import Labels

    name = labels_layer_name(image_name)
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    if not isinstance(layer, Labels) or layer.multiscale or not isinstance(layer.data,
                                                                           np.ndarray):
        return None
    if tuple(layer.data.shape) != tuple(label_shape):
        return None
    return layer


def apply_result(viewer: Any, result: JobResult, mode: str, ownership: Ownership
                 ) -> tuple[Any, WriteReport]:
    """Write ``result`` into the viewer; returns the Labels layer written and what changed.

    Parameters
    ----------
    viewer : napari.Viewer
    result : JobResult
        Labels per plane, ``(H, W)`` each, in the result's class numbering.
    mode : {"keep my edits", "replace all", "new layer"}
    ownership : Ownership
        The viewer's edit trackers.

    Returns
    -------
    layer : napari.layers.Labels
    report : WriteReport
    """
    if mode not in MERGE_MODES:
        raise InvalidInputError(f"mode: expected one of {', '.join(MERGE_MODES)}, got {mode!r}")
    source = result.request.source
    flat = result.request.config.to_flat()
    target = None if mode == "new layer" else find_target(viewer, source.name,
                                                          source.label_shape)
    if target is None:
        names = list(result.class_names)
        data = np.zeros(source.label_shape, dtype=label_dtype(len(names)))
        for plane, labels in result.labels.items():
            data[plane] = labels
        kwargs = class_table_kwargs(names, synonyms=result.synonyms, model=result.model_name,
                                    config=flat)
        kwargs["metadata"][EDITS_KEY] = np.zeros(data.shape, dtype=bool)
        layer = viewer.add_labels(data, name=labels_layer_name(source.name), scale=source.scale,
                                  translate=source.translate, opacity=0.6,
                                  **_units_kwargs(source), **kwargs)
        report = WriteReport(written=int(np.count_nonzero(data)), created=True)
    else:
        layer = target
        tracker = ownership.tracker(layer)
        known, lut = merge_classes(known_classes(layer), result.class_names,
                                   in_use_max=int(layer.data.max()) if layer.data.size else 0)
        top = max(known, default=0)
        if top > np.iinfo(layer.data.dtype).max:
            raise InvalidInputError(f"The layer '{layer.name}' cannot hold {top} labels; "
                                    "choose 'new layer' under 'Output'.")
        for k, name in enumerate(result.class_names):
            known[int(lut[k + 1])] = (name, list(result.synonyms[k]))
        mapped = {plane: lut[labels].astype(layer.data.dtype)
                  for plane, labels in result.labels.items()}
        with tracker.machine_write() as writer:  # the whole re-run is one undo step
            for plane, labels in mapped.items():
                writer.write_plane(plane, labels, replace=(mode == "replace all"))
        report = writer.report
        update_class_table(layer, known, listed=result.class_names, model=result.model_name,
                           config=flat, counts=label_counts(layer))
    if result.probs:
        add_score_layers(viewer, result, layer)
    return layer, report


def add_score_layers(viewer: Any, result: JobResult, labels_layer: Any) -> list[Any]:
    """One Image layer of class probabilities per class, colored like the class.

    Each layer ``"<image> score: <class>"`` has the labels' shape, ``float32`` values in [0, 1]
    and additive blending; it is added hidden (toggle it to inspect one class). An existing
    score layer of the same name and shape is updated in place.
    """
    from napari.layers import Image
    from napari.utils.colormaps import Colormap

    from clipseg.formats.io import hex_to_rgb

    source = result.request.source
    label_of = {name: label for label, name in table_labels(labels_layer).items()}
    out = []
    for k, name in enumerate(result.class_names):
        layer_name = f"{source.name} score: {name}"
        existing = viewer.layers[layer_name] if layer_name in viewer.layers else None
        if (isinstance(existing, Image) and not existing.multiscale
                and tuple(existing.data.shape) == source.label_shape):
            data = existing.data
        else:
            data = np.zeros(source.label_shape, dtype=np.float32)
            existing = None
        for plane, probs in result.probs.items():
            data[plane] = probs[k]
        if existing is not None:
            existing.refresh()
            out.append(existing)
            continue
        label = label_of.get(name, k + 1)
        color = layer_colors(labels_layer, [label])[label]
        r, g, b = hex_to_rgb(color)
        cmap = Colormap(colors=[[0, 0, 0, 1], [r / 255, g / 255, b / 255, 1]],
                        name=f"clipseg {color}")
        out.append(viewer.add_image(data, name=layer_name, colormap=cmap, blending="additive",
                                    contrast_limits=(0.0, 1.0), scale=source.scale,
                                    translate=source.translate, visible=False,
                                    **_units_kwargs(source)))
    return out
