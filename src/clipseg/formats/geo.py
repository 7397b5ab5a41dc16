"""GeoTIFF georeferencing carried from an input image to its label outputs, and polygons.

A GeoTIFF says where its pixels lie on the Earth with a few TIFF tags (the GeoTIFF 1.1
standard, OGC 19-008, plus two GDAL tags). :func:`read_georeference` reads them with tifffile
into a :class:`GeoReference`; the label GeoTIFF and the scores file are written with the same
tags (:meth:`GeoReference.label_tags`, passed to :func:`clipseg.formats.io.write_labels` as
``tiff_tags``), so the output overlays the input in QGIS or any GDAL-based tool.

Tags read (codes as in the standard)::

    33550  ModelPixelScaleTag      (sx, sy, sz)                          copied
    33922  ModelTiepointTag        (i, j, k, x, y, z) * n                 copied
    34264  ModelTransformationTag  4 x 4 matrix, row major                copied
    34735  GeoKeyDirectoryTag      the CRS, as GeoKeys                    copied
    34736  GeoDoubleParamsTag      doubles the keys point into            copied
    34737  GeoAsciiParamsTag       strings the keys point into            copied
    42113  GDAL_NODATA             no-data value of the input, as text    read (see below)
    42112  GDAL_METADATA           GDAL's XML band metadata               read, not copied

Georeferencing is *pixel-based*: the tags map raster (column, row) to world (x, y), so they
stay valid only for an output of the input's size. The engine returns labels at the input's
size whatever its working resolution (and tiled runs work at the input's own resolution), so
the tags are copied unchanged.

No-data: the input's ``GDAL_NODATA`` value is in the input's units (e.g. ``-9999`` for a
float DEM), meaningless for labels. Pixels where every band of the input equals it are set to
label 0 (*unlabeled*; :func:`mask_nodata`), and the label file says ``GDAL_NODATA = 0``, so
unlabeled pixels are transparent in QGIS as they are in the label PNG. ``GDAL_METADATA``
describes the input's bands (scale, offset, names) and is not copied either.

The affine transform
--------------------
:attr:`GeoReference.transform` is ``(a, b, c, d, e, f)`` (rasterio's / the ``affine``
package's order)::

    x = a * col + b * row + c
    y = d * col + e * row + f

where ``(col, row)`` are *pixel-edge* coordinates: ``(0, 0)`` is the top-left corner of the
top-left pixel and ``(W, H)`` the bottom-right corner of the image. For a
``PixelIsPoint`` raster (GeoKey 1025 = 2) the tiepoint is a pixel centre and the transform is
shifted by half a pixel, as GDAL does. A file with several tiepoints and no scale (ground
control points) has no affine transform (``transform`` None): its tags are still copied, and
polygons are written in pixel coordinates.

Polygons
--------
:func:`vectorize` turns a label image into one GeoJSON polygon Feature per 4-connected region
of one label (holes kept), with properties ``{"class", "label", "area_px"}``. It uses
rasterio's polygoniser (``rasterio.features.shapes``, GDAL's ``GDALPolygonize``) and shapely:
the GIS ecosystem's standard, whose polygons follow exact pixel edges (their area is the
pixel count times the pixel area). scikit-image's ``find_contours`` traces sub-pixel
iso-lines through pixel centres instead, which neither close on the image border nor give the
pixel boundaries a GIS user measures. Both are the optional extra ``napari-clipseg[geo]``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InvalidInputError, describe

__all__ = ["GeoReference", "read_georeference", "pixel_to_world", "mask_nodata", "vectorize",
           "write_geojson", "require_vector_deps", "GEO_TAGS", "COPIED_TAGS",
           "VECTOR_INSTALL_HINT"]

PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
GEOKEYS, GEO_DOUBLES, GEO_ASCII = 34735, 34736, 34737
GDAL_METADATA, GDAL_NODATA = 42112, 42113

#: Every tag read, by code.
GEO_TAGS: dict[int, str] = {
    PIXEL_SCALE: "ModelPixelScaleTag", TIEPOINT: "ModelTiepointTag",
    TRANSFORMATION: "ModelTransformationTag", GEOKEYS: "GeoKeyDirectoryTag",
    GEO_DOUBLES: "GeoDoubleParamsTag", GEO_ASCII: "GeoAsciiParamsTag",
    GDAL_METADATA: "GDAL_METADATA", GDAL_NODATA: "GDAL_NODATA",
}
#: The tags copied unchanged to the outputs (they describe pixel positions, not values).
COPIED_TAGS = (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS, GEO_DOUBLES, GEO_ASCII)

# GeoKeys used here (GeoTIFF 1.1, section 7)
_MODEL_TYPE, _RASTER_TYPE, _GEOGRAPHIC_TYPE, _PROJECTED_TYPE = 1024, 1025, 2048, 3072
_USER_DEFINED = 32767

VECTOR_INSTALL_HINT = "pip install 'napari-clipseg[geo]'"


@dataclass(frozen=True)
class GeoReference:
    """The georeferencing of one GeoTIFF.

    Attributes
    ----------
    tags : tuple of (code, dtype, count, value, writeonce)
        Every GeoTIFF tag of the input (:data:`GEO_TAGS`), as tifffile ``extratags`` tuples
        (``dtype`` the TIFF data type number).
    transform : (a, b, c, d, e, f) or None
        Pixel-edge ``(col, row)`` -> world ``(x, y)`` (see the module docstring); None when
        the file has ground control points only.
    nodata : float or None
        The input's ``GDAL_NODATA`` value (NaN allowed), None when it has none.
    crs_epsg : int or None
        EPSG code of the projected (else geographic) CRS; None when user-defined or absent.
    raster_type : str
        ``"area"`` (PixelIsArea, the default) or ``"point"``.
    metadata : str or None
        The input's ``GDAL_METADATA`` XML (read for information; not copied).
    """

    tags: tuple[tuple[int, int, int, Any, bool], ...]
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None = None
    crs_epsg: int | None = None
    raster_type: str = "area"
    metadata: str | None = None

    def label_tags(self) -> list[tuple[int, int, int, Any, bool]]:
        """``extratags`` for the label GeoTIFF: the georeferencing, and no-data = 0."""
        tags = [t for t in self.tags if t[0] in COPIED_TAGS]
        return tags + [(GDAL_NODATA, 2, 0, "0", True)]

    def scores_tags(self) -> list[tuple[int, int, int, Any, bool]]:
        """``extratags`` for the scores file: the georeferencing only (probabilities have no
        no-data value)."""
        return [t for t in self.tags if t[0] in COPIED_TAGS]

    @property
    def pixel_area(self) -> float | None:
        """World area of one pixel (``|a e - b d|``), None without a transform."""
        if self.transform is None:
            return None
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)

    def pixel_to_world(self, cols: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """World ``(x, y)`` of pixel-edge coordinates; see :func:`pixel_to_world`."""
        return pixel_to_world(self.transform, cols, rows)

    def sidecar(self) -> dict[str, Any]:
        """Human-readable summary for the sidecar's ``"geo"`` key."""
        nodata = self.nodata
        return {
            "crs_epsg": self.crs_epsg,
            "transform": None if self.transform is None else list(self.transform),
            "transform_meaning": "x = a*col + b*row + c, y = d*col + e*row + f; (col, row) "
                                 "= pixel edges, (0, 0) = top-left corner of the image",
            "raster_type": self.raster_type,
            "input_nodata": None if nodata is None else (str(nodata) if math.isnan(nodata)
                                                         else nodata),
            "tags": [GEO_TAGS[t[0]] for t in self.tags if t[0] in COPIED_TAGS],
        }


def pixel_to_world(transform: Sequence[float] | None, cols: Any, rows: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine ``(a, b, c, d, e, f)`` to pixel-edge coordinates.

    Parameters
    ----------
    transform : (a, b, c, d, e, f) or None
        As :attr:`GeoReference.transform`; None is the identity (pixel coordinates).
    cols, rows : array-like
        Column (x) and row (y) positions, same shape.

    Returns
    -------
    (x, y) : float64 ndarrays of that shape
    """
    cols = np.asarray(cols, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    if transform is None:
        return cols, rows
    a, b, c, d, e, f = (float(v) for v in transform)
    return a * cols + b * rows + c, d * cols + e * rows + f


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _geokeys(values: Sequence[int]) -> dict[int, int]:
    """Key id -> value of the keys stored in the directory itself (location 0)."""
    values = [int(v) for v in values]
    if len(values) < 4:
        return {}
    count = values[3]
    keys = {}
    for i in range(count):
        entry = values[4 + 4 * i: 8 + 4 * i]
        if len(entry) == 4 and entry[1] == 0:
            keys[entry[0]] = entry[3]
    return keys


def _transform(tags: Mapping[int, Any], point: bool) -> tuple[float, ...] | None:
    if TRANSFORMATION in tags:
        m = [float(v) for v in tags[TRANSFORMATION]]
        if len(m) != 16:
            raise InvalidInputError(f"ModelTransformationTag: expected 16 numbers, got {len(m)}")
        a, b, c, d, e, f = m[0], m[1], m[3], m[4], m[5], m[7]
    elif PIXEL_SCALE in tags and TIEPOINT in tags:
        sx, sy = (float(v) for v in tags[PIXEL_SCALE][:2])
        tie = [float(v) for v in tags[TIEPOINT]]
        if len(tie) < 6:
            raise InvalidInputError(f"ModelTiepointTag: expected 6 numbers per tiepoint, got "
                                    f"{len(tie)}")
        i, j, x, y = tie[0], tie[1], tie[3], tie[4]
        a, b, c, d, e, f = sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy
    else:
        return None  # ground control points only (or no placement at all)
    if point:  # tiepoints are pixel centres: move the origin half a pixel up-left
        c, f = c - 0.5 * (a + b), f - 0.5 * (d + e)
    return (a, b, c, d, e, f)


def read_georeference(path: str | os.PathLike) -> GeoReference | None:
    """The georeferencing of a TIFF's first page, or None when it is not a GeoTIFF.

    Non-TIFF files (by suffix) return None without being opened.

    Raises
    ------
    InvalidInputError
        A GeoTIFF whose placement tags are malformed (wrong number of values).
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            found = {code: page.tags.get(code) for code in GEO_TAGS}
            found = {c: t for c, t in found.items() if t is not None}
            tags = tuple((c, int(t.dtype), int(t.count), t.value, True)
                         for c, t in sorted(found.items()))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise InvalidInputError(f"{path}: expected a readable TIFF, got "
                                f"{type(exc).__name__}: {exc}") from exc
    if not any(c in found for c in (PIXEL_SCALE, TIEPOINT, TRANSFORMATION)):
        return None
    values = {c: v for c, _, _, v, _ in tags}
    keys = _geokeys(values.get(GEOKEYS, ()))
    point = keys.get(_RASTER_TYPE) == 2
    try:
        transform = _transform(values, point)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from exc
    epsg = None
    for key in (_PROJECTED_TYPE, _GEOGRAPHIC_TYPE):
        code = keys.get(key)
        if code is not None and 0 < code != _USER_DEFINED:
            epsg = code
            break
    nodata = None
    if GDAL_NODATA in values:
        text = str(values[GDAL_NODATA]).strip().strip("\x00")
        try:
            nodata = float(text)
        except ValueError:
            nodata = None  # an unreadable no-data value masks nothing
    meta = values.get(GDAL_METADATA)
    return GeoReference(tags=tags, transform=transform, nodata=nodata, crs_epsg=epsg,
                        raster_type="point" if point else "area",
                        metadata=str(meta) if meta is not None else None)


# --------------------------------------------------------------------------------------------
# no-data
# --------------------------------------------------------------------------------------------
def mask_nodata(labels: Any, data: Any, nodata: float | None, *, rows: int = 1024) -> int:
    """Set ``labels`` to 0 where every band of ``data`` equals ``nodata``; in place, in strips.

    Parameters
    ----------
    labels : (H, W) writable array (ndarray or memmap)
    data : (H, W) or (H, W, C) array-like supporting row slicing (lazy arrays too)
        The input's raw values.
    nodata : float or None
        None masks nothing; NaN matches NaN.
    rows : int
        Rows read at a time.

    Returns
    -------
    int
        Pixels set to 0.
    """
    if nodata is None:
        return 0
    height = int(labels.shape[0])
    if tuple(data.shape[:2]) != tuple(labels.shape):
        raise InvalidInputError(f"no-data mask: expected input data of the labels' shape "
                                f"{tuple(labels.shape)}, got {describe(data)}")
    count = 0
    for y0 in range(0, height, rows):
        block = np.asarray(data[y0:y0 + rows])
        hit = np.isnan(block) if math.isnan(nodata) and block.dtype.kind == "f" \
            else block == nodata
        if hit.ndim == 3:
            hit = hit.all(axis=2)
        if hit.any():
            labels[y0:y0 + rows][hit] = 0
            count += int(hit.sum())
    return count


# --------------------------------------------------------------------------------------------
# polygons
# --------------------------------------------------------------------------------------------
def require_vector_deps() -> None:
    """Raise :class:`InvalidInputError` naming the extra when rasterio or shapely is missing."""
    missing = []
    for name in ("rasterio", "shapely"):
        try:
            __import__(f"{name}.features" if name == "rasterio" else f"{name}.geometry")
        except ImportError:
            missing.append(name)
    if missing:
        raise InvalidInputError(f"--vector: expected rasterio and shapely (the polygoniser), "
                                f"{' and '.join(missing)} is not installed; run "
                                f"{VECTOR_INSTALL_HINT}")


def _crs_member(epsg: int) -> dict[str, Any]:
    name = "urn:ogc:def:crs:OGC:1.3:CRS84" if epsg == 4326 else f"urn:ogc:def:crs:EPSG::{epsg}"
    return {"type": "name", "properties": {"name": name}}


def vectorize(labels: Any, class_names: Sequence[str], geo: GeoReference | None = None, *,
              name: str | None = None) -> dict[str, Any]:
    """One GeoJSON polygon Feature per 4-connected region of one label.

    Parameters
    ----------
    labels : (H, W) integer array
        0 = unlabeled (no feature), ``k + 1`` = class ``k``.
    class_names : list of str
        The class names in label order.
    geo : GeoReference, optional
        With a transform, coordinates are world coordinates and the collection has a ``crs``
        member when the EPSG code is known; without, pixel-edge coordinates (x = column,
        y = row, growing downwards).
    name : str, optional
        The image's name, stored in the ``clipseg`` member.

    Returns
    -------
    dict
        A GeoJSON FeatureCollection. Each feature's properties: ``class`` (name), ``label``
        and ``area_px`` (pixels in the region). Exterior rings are counter-clockwise, holes
        clockwise (RFC 7946's right-hand rule) in the output coordinates.
    """
    require_vector_deps()
    from rasterio.features import shapes
    from shapely.affinity import affine_transform
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient

    arr = np.asarray(labels)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"labels: expected an (H, W) integer array, got "
                                f"{describe(labels)}")
    if arr.size and int(arr.max()) > len(class_names):
        raise InvalidInputError(f"labels: expected values in 0..{len(class_names)}, got "
                                f"{int(arr.max())}")
    source = arr.astype(np.uint8 if arr.max(initial=0) <= 255 else np.int32, copy=False)
    transform = geo.transform if geo is not None else None
    features = []
    for geom, value in shapes(source, mask=source != 0, connectivity=4):
        poly = shape(geom)
        area_px = int(round(poly.area))
        if transform is not None:
            a, b, c, d, e, f = transform
            poly = affine_transform(poly, [a, b, d, e, c, f])
        label = int(value)
        features.append({"type": "Feature", "id": len(features) + 1,
                         "properties": {"class": class_names[label - 1], "label": label,
                                        "area_px": area_px},
                         "geometry": mapping(orient(poly, 1.0))})
    world = transform is not None
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if world and geo is not None and geo.crs_epsg is not None:
        out["crs"] = _crs_member(geo.crs_epsg)
    out["clipseg"] = {
        "coordinates": "world" if world else "pixel",
        "crs_epsg": geo.crs_epsg if world and geo is not None else None,
        "note": ("coordinates in the input GeoTIFF's CRS (its affine transform)" if world else
                 "pixel-edge coordinates: x = column, y = row from the image's top-left corner "
                 "(y grows downwards); the input had no georeferencing"),
        "image": name,
        "pixel_area": geo.pixel_area if world and geo is not None else 1.0,
    }
    out["features"] = features
    return out


def write_geojson(path: str | os.PathLike, labels: Any, class_names: Sequence[str],
                  geo: GeoReference | None = None, *, name: str | None = None) -> Path:
    """:func:`vectorize` ``labels`` and write the collection atomically to ``path``."""
    collection = vectorize(labels, class_names, geo, name=name)
    text = json.dumps(collection, separators=(",", ":"), allow_nan=False) + "\n"
    return atomic_write_text(path, text)
