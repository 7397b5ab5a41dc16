"""Apply a finished :class:`~napari_clipseg.job.JobResult` to the viewer (main thread only).

Three ways to write, chosen explicitly by the user (:data:`MERGE_MODES`):

``"fill unlabeled"`` (default)
    In the existing ``"<image> labels"`` layer only pixels that are still 0 receive a label, so
    painted corrections are never overwritten. Undoable.
``"replace"``
    Every pixel of the segmented planes takes the new label. Undoable (one undo step).
``"new layer"``
    Always add a new Labels layer (napari makes the name unique).

When the existing layer already names some classes, the new result is renumbered into that table
(a class keeps its label and color; new classes are appended).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError

from .job import JobResult
from .labels_layer import (
    MERGE_MODES,
    class_table_kwargs,
    label_dtype,
    layer_class_names,
    layer_synonyms,
    merge_class_names,
    set_class_table,
    write_plane,
)


def labels_layer_name(image_name: str) -> str:
    """Name of the result layer of image layer ``image_name``."""
    return f"{image_name} labels"


def find_target(viewer: Any, result: JobResult) -> Any | None:
    """The existing Labels layer a re-run writes into, or None (a new layer is needed)."""
    from napari.layers import Labels

    name = labels_layer_name(result.request.source.name)
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    if not isinstance(layer, Labels) or layer.multiscale:
        return None
    if tuple(layer.data.shape) != result.request.source.label_shape:
        return None
    return layer


def apply_result(viewer: Any, result: JobResult, mode: str = "fill unlabeled") -> Any:
    """Write ``result`` into the viewer and return the Labels layer written.

    Parameters
    ----------
    viewer : napari.Viewer
    result : JobResult
        Labels per plane, ``(H, W)`` each, in the result's class numbering.
    mode : {"fill unlabeled", "replace", "new layer"}

    Returns
    -------
    napari.layers.Labels
    """
    if mode not in MERGE_MODES:
        raise InvalidInputError(f"mode: expected one of {', '.join(MERGE_MODES)}, got {mode!r}")
    source = result.request.source
    flat = result.request.config.to_flat()
    target = None if mode == "new layer" else find_target(viewer, result)
    if target is None:
        names = list(result.class_names)
        data = np.zeros(source.label_shape, dtype=label_dtype(len(names)))
        for plane, labels in result.labels.items():
            data[plane] = labels
        kwargs = class_table_kwargs(names, synonyms=result.synonyms, model=result.model_name,
                                    config=flat)
        layer = viewer.add_labels(data, name=labels_layer_name(source.name), scale=source.scale,
                                  translate=source.translate, opacity=0.6, **kwargs)
    else:
        layer = target
        existing = layer_class_names(layer)
        names, lut = merge_class_names(existing, result.class_names)
        if len(names) > np.iinfo(layer.data.dtype).max:
            raise InvalidInputError(f"{layer.name}: dtype {layer.data.dtype} cannot hold "
                                    f"{len(names)} classes; choose 'new layer'")
        synonyms = layer_synonyms(layer, names)
        for k, name in enumerate(result.class_names):
            synonyms[names.index(name)] = list(result.synonyms[k])
        with layer.block_history():  # the whole re-run is one undo step
            for plane, labels in result.labels.items():
                mapped = lut[labels].astype(layer.data.dtype)
                write_plane(layer, plane, mapped, replace=(mode == "replace"))
        set_class_table(layer, names, synonyms=synonyms, model=result.model_name, config=flat)
    if result.probs:
        add_score_layers(viewer, result, layer)
    return layer


def add_score_layers(viewer: Any, result: JobResult, labels_layer: Any) -> list[Any]:
    """One Image layer of class probabilities per class, colored like the class.

    Each layer ``"<image> score: <class>"`` has the labels' shape, ``float32`` values in [0, 1]
    and additive blending; it is added hidden (toggle it to inspect one class). An existing
    score layer of the same name and shape is updated in place.
    """
    from clipseg.formats.io import class_colors, hex_to_rgb
    from napari.layers import Image
    from napari.utils.colormaps import Colormap

    source = result.request.source
    colors = class_colors(len(layer_class_names(labels_layer)) or len(result.class_names))
    all_names = layer_class_names(labels_layer) or list(result.class_names)
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
        label = all_names.index(name) + 1 if name in all_names else k + 1
        color = colors[(label - 1) % len(colors)]
        r, g, b = hex_to_rgb(color)
        cmap = Colormap(colors=[[0, 0, 0, 1], [r / 255, g / 255, b / 255, 1]],
                        name=f"clipseg {color}")
        out.append(viewer.add_image(data, name=layer_name, colormap=cmap, blending="additive",
                                    contrast_limits=(0.0, 1.0), scale=source.scale,
                                    translate=source.translate, visible=False))
    return out
