"""Physical pixel size between napari layers and clipseg files.

napari places a layer in the world with its ``scale`` (and, from napari 0.5, ``units``), so
a layer read by a microscopy reader already carries its pixel size. Here:

- :func:`layer_kwargs` turns a sidecar's ``"pixel_size"`` into a Labels layer's ``scale`` and
  ``units`` (µm), so a reopened draft overlays its image;
- :func:`pixel_size_of` turns a layer's ``scale`` and ``units`` into the ``pixel_size`` that
  :func:`clipseg.formats.io.write_labels` records. A scale in a length unit is converted to
  µm; a scale whose unit is napari's default ``pixel`` is taken as µm when it is not 1 (most
  microscopy readers set the scale in µm and leave the units alone); a scale of 1 pixel is
  no physical size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clipseg.formats.ome import NO_UNIT, pixel_size_from_entry, to_micrometres

__all__ = ["layer_kwargs", "pixel_size_of", "UNIT"]

#: The unit of every scale this plugin sets.
UNIT = "µm"


def layer_kwargs(meta: Mapping[str, Any], ndim: int = 2) -> dict[str, Any]:
    """``{"scale", "units"}`` for a Labels layer of ``ndim`` axes (the last two y, x) from a
    sidecar; ``{}`` when it records no pixel size."""
    size = pixel_size_from_entry(meta.get("pixel_size"))
    if size is None:
        return {}
    lead = ndim - 2
    return {"scale": (1.0,) * lead + (size["y"], size["x"]), "units": ("pixel",) * lead
            + (UNIT, UNIT)}


def _unit_text(unit: Any) -> str:
    return "pixel" if unit is None else str(unit)


def pixel_size_of(scale: Sequence[float] | None, units: Sequence[Any] | None = None
                  ) -> dict[str, float] | None:
    """The ``{"y", "x"}`` pixel size in µm of a layer's last two axes, or None.

    Parameters
    ----------
    scale : sequence of float
        The layer's ``scale`` (one per axis).
    units : sequence of str or pint units, optional
        The layer's ``units`` (napari >= 0.5); missing means ``pixel``.
    """
    if scale is None or len(scale) < 2:
        return None
    units = list(units) if units is not None else ["pixel"] * len(scale)
    pairs = [(float(v), _unit_text(u)) for v, u in zip(list(scale)[-2:], units[-2:])]
    bare = [u.strip().lower() in NO_UNIT for _, u in pairs]
    if all(bare) and all(v == 1.0 for v, _ in pairs):
        return None
    try:
        y, x = (to_micrometres(v, UNIT if b else u) for (v, u), b in zip(pairs, bare))
    except ValueError:
        return None  # a unit that is not a length (e.g. seconds): no pixel size
    return {"y": y, "x": x}
