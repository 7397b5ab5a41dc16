"""npe2 writer: save a Labels layer as a label image plus its class-name sidecar.

The files are those of :func:`clipseg.formats.io.write_labels` (``NAME.png`` or ``NAME.tif`` and
``NAME.clipseg.json``, plus ``NAME.edits.png`` when a person edited some pixels), so the CLI,
the reader and any script read them the same way. The human-edit mask comes from the layer's
``metadata["clipseg_edits"]`` (:mod:`napari_clipseg.ownership`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError, describe


def class_table_from_meta(data: np.ndarray, meta: dict[str, Any]
                          ) -> tuple[list[str], list[str], list[list[str]]]:
    """Class names, colors and synonyms of a Labels layer, from its layer-data ``meta``.

    Names come from the ``class`` column of ``meta["features"]`` (row ``index`` = label), then
    from the classes the layer's metadata remembers; other labels up to the largest are named
    ``"label N"``. Colors are those napari draws.

    Returns
    -------
    names, colors : list of str
        One entry per label ``1..K``, ``K = max(largest label in the table, data.max())``.
    synonyms : list of list of str
    """
    from napari.layers import Labels

    from .labels_layer import known_classes, layer_class_colors, table_labels

    metadata = meta.get("metadata") or {}
    probe = Labels(np.zeros((1, 1), dtype=data.dtype), features=meta.get("features"),
                   colormap=meta.get("colormap"),
                   metadata={"clipseg": metadata.get("clipseg") or {}})
    table, known = table_labels(probe), known_classes(probe)
    top = max(max(table, default=0), int(data.max()) if data.size else 0)
    names, synonyms = [], []
    for label in range(1, top + 1):
        name = table.get(label) or known.get(label, (f"label {label}", []))[0]
        names.append(name)
        known_name, known_syn = known.get(label, (None, []))
        synonyms.append(list(known_syn) if known_name == name and known_syn else [name])
    return names, layer_class_colors(probe, len(names)), synonyms


def _plane_paths(path: str, lead: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
    """``NAME.png`` -> ``[((0,), "NAME_z000.png"), ...]`` for leading axes of shape ``lead``."""
    from clipseg.formats.io import output_base

    base = output_base(path)
    suffix = path[len(str(base)):]  # ".png", ".tif", ".tiff" or ""
    widths = [max(3, len(str(n - 1))) for n in lead]
    out = []
    for index in np.ndindex(*lead):
        tag = "-".join(f"{i:0{w}d}" for i, w in zip(index, widths))
        name = f"{base.name}_z{tag}" if len(lead) == 1 else f"{base.name}_{tag}"
        out.append((tuple(index), str(base.with_name(name)) + suffix))
    return out


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        ``NAME.png``, ``NAME.tif`` or ``NAME.tiff`` (PNG needs labels <= 255).
    data : array-like
        ``(H, W)`` integer labels, or ``(..., H, W)`` for a stack: each plane is written as
        ``NAME_z000.png`` (one leading axis) or ``NAME_000-001.png`` (several), each with its
        sidecar, since the format holds 2-D images.
    meta : dict
        The layer's state (``features``, ``colormap``, ``metadata``, ``name``, ``scale``,
        ``units``). A physical scale is recorded as the sidecar's ``pixel_size`` (and, in a
        ``.tif``, as OME-XML; :func:`napari_clipseg.spatial.pixel_size_of`).

    Returns
    -------
    list of str
        The label image, edit mask (when a person edited pixels) and sidecar paths written.
    """
    from clipseg.formats.io import write_labels as io_write

    arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim < 2 or arr.dtype.kind not in "ui":
        raise InvalidInputError(f"{meta.get('name', 'labels')}: expected integer labels with at "
                                f"least 2 dimensions, got {describe(arr)}")
    from .labels_layer import EDITS_KEY

    names, colors, synonyms = class_table_from_meta(arr, meta)
    metadata = meta.get("metadata") or {}
    info = metadata.get("clipseg") or {}
    edits = metadata.get(EDITS_KEY)
    if isinstance(edits, np.ndarray):
        edits = edits.reshape(arr.shape) if edits.size == arr.size else None
    else:
        edits = None
    from .spatial import pixel_size_of

    pixel_size = pixel_size_of(meta.get("scale"), meta.get("units"))
    targets = [((), path)] if arr.ndim == 2 else _plane_paths(path, arr.shape[:-2])
    written: list[str] = []
    for index, target in targets:
        image_info = {"layer": meta.get("name")}
        if index:
            image_info["plane"] = list(index)
        written += [str(p) for p in io_write(target, arr[index], names, colors=colors,
                                             synonyms=synonyms, model=info.get("model"),
                                             config=info.get("config"), image_info=image_info,
                                             edits=None if edits is None else edits[index],
                                             pixel_size=pixel_size)]
    return written
