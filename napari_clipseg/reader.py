"""npe2 reader: open a label image written by :func:`clipseg.formats.io.write_labels`.

Only paths that have a ``NAME.clipseg.json`` sidecar are claimed; any other PNG/TIFF is left to
napari's other readers.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_labels_layers` when ``path`` is a clipseg result, else None."""
    from clipseg.formats.io import find_sidecar

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(find_sidecar(p) is None for p in paths):
        return None
    return read_labels_layers


def read_labels_layers(path: str | list[str]) -> list[LayerData]:
    """Read each result as a Labels layer with its class names, synonyms and colors.

    Returns
    -------
    list of (data, kwargs, "labels")
        ``data`` is ``(H, W)`` uint8/uint16/uint32 (TIFFs are read lazily); ``kwargs`` holds
        ``features`` (``index``, ``class``), a direct ``colormap``, ``metadata["clipseg"]``
        and ``metadata["clipseg_edits"]``: the human-edit mask, ``(H, W)`` bool (all False
        for a result nobody edited), so a reopened draft keeps which pixels are a person's;
        with the sidecar's ``pixel_size``, ``scale`` and ``units`` (µm), so the draft
        overlays its image at the right scale.
    """
    import numpy as np

    from clipseg.formats.io import output_base, read_labels

    from .labels_layer import EDITS_KEY, class_table_kwargs
    from .spatial import layer_kwargs

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        labels, meta = read_labels(p, lazy=True)
        classes = sorted(meta["classes"], key=lambda c: int(c["label"]))
        names = [str(c["name"]) for c in classes]
        kwargs = class_table_kwargs(
            names, synonyms=[list(c.get("synonyms") or [c["name"]]) for c in classes],
            model=meta.get("model"), config=meta.get("config"),
            colors=[str(c["color"]) for c in classes])
        edits = meta.get("edits")
        kwargs["metadata"][EDITS_KEY] = (np.array(edits, dtype=bool) if edits is not None
                                         else np.zeros(labels.shape, dtype=bool))
        kwargs["name"] = output_base(p).name
        kwargs.update(layer_kwargs(meta, labels.ndim))  # the pixel size as scale, in µm
        out.append((labels, kwargs, "labels"))
    return out
