"""Physical pixel sizes and channel names of microscopy images, read in and written back.

A microscope image says how large its pixels are and what its channels show; a label draft
made from it must say the same, so it overlays the image at the right scale in Fiji, QuPath or
napari. :func:`read_spatial` reads that into a :class:`SpatialInfo` from

- **OME-TIFF** (``tifffile``'s ``ome_metadata``, the first ``Image``): ``Pixels``
  ``PhysicalSizeX/Y/Z`` with ``PhysicalSize?Unit`` (the OME default is µm) and the
  ``Channel`` ``Name`` attributes;
- **ImageJ TIFFs** (``imagej_metadata``): ``XResolution``/``YResolution`` are pixels per
  ``unit`` (``micron``, ``um``, ``nm``...), ``spacing`` the z step; ``Labels`` name the
  channels when there is one per channel;
- **OME-Zarr** (NGFF 0.4: ``.zattrs``; 0.5: ``zarr.json``, under ``attributes.ome``): the
  first multiscale's axes (with units) and the ``scale`` transformations of its first
  dataset, times the multiscale's own ``scale`` when it has one; ``omero.channels[].label``.

Every size is converted to micrometres (:data:`UNITS` lists the spellings understood).
Metadata that cannot be understood (an unknown unit, a size that is not a positive number, XML
that does not parse) gives a warning (:class:`SpatialWarning`) and no size, never an error:
the image is still segmented, only without a scale. When an OME-TIFF's resolution tags
disagree with its OME-XML, the OME-XML is used and a warning says so. A plain TIFF's
resolution tags are not read as a pixel size: most TIFFs carry a print resolution (72 dpi),
not a physical one.

The writer side, :meth:`SpatialInfo.tiff_kwargs`, gives ``tifffile.imwrite`` arguments for a
2-D label TIFF: OME-XML with ``PhysicalSizeX/Y`` in µm (read by Bio-Formats, QuPath and
tifffile) and ``XResolution``/``YResolution`` in pixels per centimetre with
``ResolutionUnit`` = centimetre (the baseline TIFF tags every reader knows).
"""
from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SpatialInfo", "SpatialWarning", "read_spatial", "to_micrometres", "UNITS", "NO_UNIT",
           "pixel_size_entry", "pixel_size_from_entry", "tiff_kwargs"]

#: Length units understood (lower-cased, spaces removed), as micrometres per unit: OME's
#: ``UnitsLength`` symbols, NGFF's UDUNITS names, ImageJ's ``unit`` spellings.
UNITS: dict[str, float] = {
    "m": 1e6, "meter": 1e6, "metre": 1e6, "meters": 1e6, "metres": 1e6,
    "dm": 1e5, "decimeter": 1e5, "decimetre": 1e5,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4, "centimeters": 1e4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "millimeters": 1e3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "micrometers": 1.0, "micrometres": 1.0, "\\u00b5m": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3,
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "Å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4, "angstroms": 1e-4,
    "in": 25400.0, "inch": 25400.0, "inches": 25400.0,
}
#: Units that say "no physical size" (ImageJ writes ``pixel`` for an uncalibrated image).
NO_UNIT = ("", "pixel", "pixels", "px")
#: Relative difference above which two sources of one pixel size are said to disagree.
TOLERANCE = 0.01


class SpatialWarning(UserWarning):
    """Pixel-size or channel metadata that could not be used (the image is read without it)."""


def _warn(path: Any, text: str) -> None:
    warnings.warn(f"{path}: {text}", SpatialWarning, stacklevel=3)


def to_micrometres(value: Any, unit: Any) -> float:
    """``value`` in ``unit`` as micrometres.

    Raises
    ------
    ValueError
        ``unit`` is not in :data:`UNITS`, or ``value`` is not a finite number > 0.
    """
    text = str(unit if unit is not None else "µm").strip().replace(" ", "")
    factor = UNITS.get(text, UNITS.get(text.lower()))
    if factor is None:
        raise ValueError(f"expected a length unit (m, cm, mm, µm or um or micron, nm, pm, Å "
                         f"or angstrom, inch, or their names such as micrometer), got {unit!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"expected a pixel size > 0, got {value!r}")
    return number * factor


@dataclass(frozen=True)
class SpatialInfo:
    """Pixel size and channel names of one image.

    Attributes
    ----------
    y, x : float or None
        Pixel height and width in micrometres; None when the file does not say.
    z : float or None
        The z step in micrometres (a stack), None when absent.
    channel_names : tuple of str
        The channels' names in channel order (``()`` when the file names none).
    source : str
        Where the sizes came from: ``"ome-tiff"``, ``"imagej"``, ``"ome-zarr"`` or
        ``"sidecar"``.
    """

    y: float | None = None
    x: float | None = None
    z: float | None = None
    channel_names: tuple[str, ...] = ()
    source: str = ""

    @property
    def has_pixel_size(self) -> bool:
        """True when both the pixel height and width are known."""
        return self.y is not None and self.x is not None

    def pixel_size(self) -> dict[str, Any] | None:
        """``{"y": ..., "x": ...}`` (and ``"z"``) in µm and ``"source"``, None without a y and
        x size."""
        if not self.has_pixel_size:
            return None
        out: dict[str, Any] = {"y": float(self.y), "x": float(self.x)}  # type: ignore[arg-type]
        if self.z is not None:
            out["z"] = float(self.z)
        if self.source:
            out["source"] = self.source
        return out

    def tiff_kwargs(self) -> dict[str, Any]:
        """``tifffile.imwrite`` arguments that put this pixel size into a 2-D label TIFF.

        OME-XML (``ome=True``, ``PhysicalSizeX/Y`` in µm) and resolution tags in pixels per
        centimetre; ``{}`` without a pixel size.
        """
        return tiff_kwargs(self.pixel_size())


def pixel_size_entry(size: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar's ``"pixel_size"`` value: ``{"y", "x"[, "z"], "unit": "µm"[, "source"]}``
    from sizes in µm (a ``"source"`` string is kept: where the sizes were read)."""
    from ..errors import InvalidInputError

    try:
        out: dict[str, Any] = {k: to_micrometres(size[k], "µm") for k in ("y", "x", "z")
                               if k in size}
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"pixel_size: expected sizes in µm > 0, got {dict(size)!r} "
                                f"({exc})") from exc
    if "y" not in out or "x" not in out:
        raise InvalidInputError(f"pixel_size: expected 'y' and 'x' sizes in µm, got "
                                f"{dict(size)!r}")
    out["unit"] = "µm"
    if isinstance(size.get("source"), str) and size["source"]:
        out["source"] = size["source"]
    return out


def pixel_size_from_entry(entry: Any) -> dict[str, float] | None:
    """The ``{"y", "x"[, "z"]}`` sizes in µm of a sidecar's ``"pixel_size"``, or None.

    A malformed entry gives a :class:`SpatialWarning` and None."""
    if entry is None:
        return None
    try:
        if not isinstance(entry, Mapping):
            raise ValueError(f"expected an object, got {type(entry).__name__}")
        unit = entry.get("unit", "µm")
        out = {k: to_micrometres(entry[k], unit) for k in ("y", "x", "z") if k in entry}
        if "y" not in out or "x" not in out:
            raise ValueError("expected 'y' and 'x'")
    except (ValueError, TypeError) as exc:
        _warn("sidecar", f"'pixel_size' not understood ({exc}); no scale")
        return None
    return out


def tiff_kwargs(size: Mapping[str, float] | None) -> dict[str, Any]:
    """``tifffile.imwrite`` arguments for a 2-D label TIFF of pixel ``size`` (µm, y and x)."""
    if not size:
        return {}
    y, x = float(size["y"]), float(size["x"])
    return {"ome": True, "resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER",
            "metadata": {"axes": "YX", "PhysicalSizeX": x, "PhysicalSizeXUnit": "µm",
                         "PhysicalSizeY": y, "PhysicalSizeYUnit": "µm"}}


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_xml(path: Path, text: str) -> SpatialInfo | None:
    try:
        root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except ET.ParseError as exc:
        _warn(path, f"OME-XML does not parse ({exc}); read without pixel size or channel "
                    "names")
        return None
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        _warn(path, "OME-XML has no Pixels element; read without pixel size")
        return None
    sizes: dict[str, float | None] = {}
    for axis in "YXZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            sizes[axis.lower()] = None
            continue
        try:
            sizes[axis.lower()] = to_micrometres(value, pixels.get(f"PhysicalSize{axis}Unit"))
        except ValueError as exc:
            _warn(path, f"OME PhysicalSize{axis}: {exc}; no scale along {axis}")
            sizes[axis.lower()] = None
    names = tuple((ch.get("Name") or "").strip() for ch in pixels
                  if _local(ch.tag) == "Channel")
    return SpatialInfo(y=sizes["y"], x=sizes["x"], z=sizes["z"],
                       channel_names=names if any(names) else (), source="ome-tiff")


def _resolution(page: Any, axis: str) -> float | None:
    """Pixels per unit from an X/YResolution rational, None when absent or zero."""
    tag = page.tags.get(f"{axis}Resolution")
    if tag is None:
        return None
    value = tag.value
    number = value[0] / value[1] if isinstance(value, tuple) and value[1] else value
    try:
        number = float(number)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _imagej(path: Path, meta: Mapping[str, Any], page: Any, channels: int) -> SpatialInfo:
    unit = str(meta.get("unit", "") or "").strip()
    sizes: dict[str, float | None] = {"y": None, "x": None, "z": None}
    if unit.lower() not in NO_UNIT:
        for axis in "YX":
            per_unit = _resolution(page, axis)
            if per_unit is None:
                continue
            try:
                sizes[axis.lower()] = to_micrometres(1.0 / per_unit, unit)
            except ValueError as exc:
                _warn(path, f"ImageJ unit: {exc}; no scale")
                sizes = {"y": None, "x": None, "z": None}
                break
        if meta.get("spacing") is not None and sizes["x"] is not None:
            try:
                sizes["z"] = to_micrometres(meta["spacing"], unit)
            except ValueError as exc:
                _warn(path, f"ImageJ spacing: {exc}; no z step")
    labels = meta.get("Labels")
    names: tuple[str, ...] = ()
    if isinstance(labels, (list, tuple)) and len(labels) == channels > 1:
        names = tuple(str(v).strip() for v in labels)
    return SpatialInfo(y=sizes["y"], x=sizes["x"], z=sizes["z"], channel_names=names,
                       source="imagej")


def _tag_sizes(page: Any) -> dict[str, float]:
    """Pixel sizes (µm) from resolution tags in centimetres, for the OME consistency check."""
    unit = page.tags.get("ResolutionUnit")
    if unit is None or int(unit.value) != 3:
        return {}
    out = {}
    for axis in "YX":
        per_cm = _resolution(page, axis)
        if per_cm is not None and per_cm != 1.0:
            out[axis.lower()] = 1e4 / per_cm
    return out


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > TOLERANCE * max(abs(a), abs(b))


def _read_tiff(path: Path) -> SpatialInfo | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            series = tif.series[0]
            dims = dict(zip(series.axes, series.shape))
            channels = int(dims.get("C", dims.get("S", 1)))
            if tif.is_ome:
                info = _ome_xml(path, tif.ome_metadata or "")
                if info is not None:
                    tags = _tag_sizes(page)
                    clash = [a for a in ("y", "x") if a in tags and getattr(info, a) is not None
                             and _differs(tags[a], getattr(info, a))]
                    if clash:
                        _warn(path, "the resolution tags say a pixel is "
                                    + ", ".join(f"{tags[a]:.6g} µm ({a})" for a in clash)
                                    + ", the OME-XML "
                                    + ", ".join(f"{getattr(info, a):.6g} µm" for a in clash)
                                    + "; using the OME-XML")
                return info
            if tif.is_imagej and tif.imagej_metadata is not None:
                return _imagej(path, tif.imagej_metadata, page, channels)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # an unreadable TIFF: whoever opens its pixels reports why
    return None


# --------------------------------------------------------------------------------------------
# OME-Zarr (NGFF)
# --------------------------------------------------------------------------------------------
def _ngff_attributes(path: Path) -> dict[str, Any] | None:
    """The OME attributes of a Zarr group: 0.5's ``zarr.json`` ``attributes.ome``, else 0.4's
    ``.zattrs``; None when neither file is there."""
    for name in ("zarr.json", ".zattrs"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            _warn(file, f"expected JSON, could not read it ({exc}); no pixel size")
            return {}
        if not isinstance(data, dict):
            _warn(file, f"expected a JSON object, got {type(data).__name__}; no pixel size")
            return {}
        if name == "zarr.json":
            attrs = data.get("attributes") or {}
            ome = attrs.get("ome") if isinstance(attrs, dict) else None
            if isinstance(ome, dict):
                return ome
            if isinstance(attrs, dict) and "multiscales" in attrs:
                return attrs
            continue  # a Zarr v3 group without OME attributes: try .zattrs
        return data
    return None


def _scale_of(transforms: Any, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or ():
        if isinstance(t, dict) and t.get("type") == "scale":
            values = t.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                raise ValueError(f"expected a scale of {ndim} numbers, got {values!r}")
            scale = [a * float(b) for a, b in zip(scale, values)]
    return scale


def _read_zarr(path: Path) -> SpatialInfo | None:
    attrs = _ngff_attributes(path)
    if attrs is None:
        return None
    if not attrs:
        return SpatialInfo(source="ome-zarr")
    names: tuple[str, ...] = ()
    omero = attrs.get("omero")
    if isinstance(omero, dict) and isinstance(omero.get("channels"), list):
        labels = tuple(str(c.get("label", "")).strip() if isinstance(c, dict) else ""
                       for c in omero["channels"])
        names = labels if any(labels) else ()
    sizes: dict[str, float | None] = {"y": None, "x": None, "z": None}
    try:
        multiscales = attrs.get("multiscales")
        if not isinstance(multiscales, list) or not multiscales:
            raise ValueError("expected 'multiscales' as a non-empty list")
        ms = multiscales[0]
        axes = ms.get("axes")
        if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
            raise ValueError(f"expected 'axes' as a list of {{name, type, unit}} objects (NGFF "
                             f"0.4 or later), got {axes!r}")
        datasets = ms.get("datasets")
        if not isinstance(datasets, list) or not datasets:
            raise ValueError("expected 'datasets' as a non-empty list")
        scale = _scale_of(datasets[0].get("coordinateTransformations"), len(axes))
        scale = [a * b for a, b in zip(scale, _scale_of(ms.get("coordinateTransformations"),
                                                          len(axes)))]
        for axis, value in zip(axes, scale):
            name = str(axis.get("name", "")).lower()
            if name in sizes and axis.get("type", "space") == "space":
                unit = axis.get("unit")
                sizes[name] = None if unit is None else to_micrometres(value, unit)
    except (ValueError, TypeError, AttributeError) as exc:
        _warn(path, f"OME-Zarr metadata not understood ({exc}); read without pixel size")
        sizes = {"y": None, "x": None, "z": None}
    return SpatialInfo(y=sizes["y"], x=sizes["x"], z=sizes["z"], channel_names=names,
                       source="ome-zarr")


# --------------------------------------------------------------------------------------------
def read_spatial(path: str | os.PathLike) -> SpatialInfo | None:
    """The pixel size and channel names of an image file, or None when it has neither kind of
    metadata (a PNG, JPEG, plain TIFF).

    ``path`` may be a TIFF (OME or ImageJ) or an OME-Zarr folder (``.zarr``). Never raises for
    bad metadata: it warns (:class:`SpatialWarning`) and leaves that part out.
    """
    path = Path(path)
    if path.is_dir():
        return _read_zarr(path)
    if path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
        return _read_tiff(path)
    return None
