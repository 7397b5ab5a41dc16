"""npe2 writer: save a Labels layer as a label image plus its class-name sidecar.

The files are those of :func:`clipseg.formats.io.write_labels` (``NAME.png`` or ``NAME.tif`` and
``NAME.clipseg.json``), so the CLI, the reader below and any script read them the same way.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError, describe


def class_table_from_meta(data: np.ndarray, meta: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Class names and colors of a Labels layer, from its layer-data ``meta``.

    Names come from the ``class`` column of ``meta["features"]`` (row ``index`` = label); labels
    in ``data`` beyond that table are named ``"label N"``. Colors are those napari draws.

    Returns
    -------
    names, colors : list of str
        One entry per label ``1..K``, ``K = max(len(table), data.max())``.
    """
    from napari.layers import Labels

    from .labels_layer import layer_class_colors, layer_class_names

    probe = Labels(np.zeros((1, 1), dtype=data.dtype), features=meta.get("features"),
                   colormap=meta.get("colormap"))
    names = layer_class_names(probe)
    top = int(data.max()) if data.size else 0
    names = names + [f"label {k}" for k in range(len(names) + 1, top + 1)]
    return names, layer_class_colors(probe, len(names))


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
        The layer's state (``features``, ``colormap``, ``metadata``, ``name``).

    Returns
    -------
    list of str
        The label image and sidecar paths written.
    """
    from clipseg.formats.io import write_labels as io_write

    arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim < 2 or arr.dtype.kind not in "ui":
        raise InvalidInputError(f"{meta.get('name', 'labels')}: expected integer labels with at "
                                f"least 2 dimensions, got {describe(arr)}")
    names, colors = class_table_from_meta(arr, meta)
    info = (meta.get("metadata") or {}).get("clipseg", {})
    known = dict(zip(info.get("class_names", []), info.get("synonyms", [])))
    synonyms = [list(known.get(n, [n])) for n in names]
    targets = [((), path)] if arr.ndim == 2 else _plane_paths(path, arr.shape[:-2])
    written: list[str] = []
    for index, target in targets:
        image_info = {"layer": meta.get("name")}
        if index:
            image_info["plane"] = list(index)
        written += [str(p) for p in io_write(target, arr[index], names, colors=colors,
                                             synonyms=synonyms, model=info.get("model"),
                                             config=info.get("config"), image_info=image_info)]
    return written
