"""Reading images (lazily when they are big) and segmenting large ones tile by tile.

Tiled processing works at the image's own resolution (``short_side=0``). The image is cut
into *core* tiles; each core is segmented as part of a *region* made of every window of the
**global** sliding-window grid (:func:`clipseg.tiling.window_boxes` over the whole image) that
reaches within ``halo`` pixels of the core, with ``halo = pamr_iterations * max(pamr_dilations)``
when PAMR is on, else 0. Because the grid the engine lays over such a region is exactly that
subset of the global grid (regions start and end on global window edges), every core pixel is
averaged over the same windows as in the untiled run, and PAMR sees all the pixels it can reach.
The tiled result therefore equals the untiled one up to float summation order (the tests
measure it). Only the cores are written, straight into a memory-mapped TIFF, so peak memory
grows with the tile, not with the image area times the number of classes.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClipSegError, InvalidInputError, describe
from ..image import as_rgb01
from ..tiling import Box, window_boxes

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec

#: Rows read at once when scanning a lazy image for its value range.
SCAN_PIXELS = 1 << 22


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
class ImageSource:
    """An image file opened for region reads, converted for the engine on the fly.

    Parameters
    ----------
    path : Path
        The file (for messages).
    data : array-like
        ``(H, W)`` or ``(H, W, C)`` (channels last, after :func:`open_image` moved them),
        numpy array, memmap or zarr array.
    channels : (r, g, b) of int or None, optional
        Passed to :func:`clipseg.image.as_rgb01`.
    contrast_limits : (low, high) or three pairs, optional
        Passed to :func:`clipseg.image.as_rgb01`; when absent and the data is not ``uint8``,
        the limits are the value range of the whole image (computed once, in strips), so every
        region is converted exactly as the whole image would be.
    """

    def __init__(self, path: Path, data: Any, *, channels: Any = None,
                 contrast_limits: Any = None, closer: Callable[[], None] | None = None,
                 spatial: Any = None) -> None:
        self.path = Path(path)
        self.data = data
        #: The file's pixel size and channel names (:class:`clipseg.formats.ome.SpatialInfo`)
        self.spatial = spatial
        self._limits = contrast_limits
        self._closer = closer
        shape = tuple(int(v) for v in data.shape)
        if len(shape) not in (2, 3):
            raise InvalidInputError(f"{path}: expected a 2-D image (gray, RGB(A) or channels), "
                                    f"got {len(shape)}-D data of shape {shape}")
        if shape[0] < 2 or shape[1] < 2:
            raise InvalidInputError(f"{path}: expected an image of at least 2 x 2 pixels, got "
                                    f"{shape[0]} x {shape[1]} (data of shape {shape})")
        self.shape: tuple[int, int] = (shape[0], shape[1])
        self.dtype = np.dtype(data.dtype)
        #: ``--channels`` as given (a :class:`clipseg.channels.ChannelChoice` or indices)
        self.choice = channels
        self.channels = self._resolve(channels, shape)

    def _resolve(self, channels: Any, shape: tuple[int, ...]) -> Any:
        """Channel names and presets matched against this file's channels."""
        from ..channels import ChannelChoice

        if not isinstance(channels, ChannelChoice):
            return channels
        if channels.indices is not None and len(shape) == 3:
            return channels.indices  # as_rgb01 checks them
        names = self.spatial.channel_names if self.spatial is not None else ()
        count = shape[2] if len(shape) == 3 else 1
        return channels.resolve(names, count, self.path.name)

    def channel_entries(self) -> dict[str, Any] | None:
        """The sidecar's ``"channels"``: the file's channel names and which input channel
        (index, name) became r, g and b; None when none was chosen and the file names none."""
        from ..channels import SLOTS, ChannelChoice

        names = list(self.spatial.channel_names) if self.spatial is not None else []
        if self.channels is None and not names:
            return None
        count = self.data.shape[2] if len(self.data.shape) == 3 else 1
        names = names if len(names) == count else []
        out: dict[str, Any] = {"names": names}
        if self.channels is not None:
            out["given"] = (self.choice.text() if isinstance(self.choice, ChannelChoice) else
                            " ".join("none" if c is None else str(c) for c in self.channels))
            for slot, c in zip(SLOTS, self.channels):
                index = None if c is None else int(c) % count
                out[slot] = None if index is None else {
                    "index": index, "name": names[index] if names else None}
        return out

    def pixel_size(self) -> dict[str, Any] | None:
        """The input's pixel size in µm (``{"y", "x"[, "z"], "source"}``), or None."""
        return self.spatial.pixel_size() if self.spatial is not None else None

    def close(self) -> None:
        """Release the file handle of a lazily read TIFF."""
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def contrast_limits(self) -> Any:
        """Limits used for every region (None = plain ``uint8``/bool conversion)."""
        if self._limits is not None or self.dtype == np.uint8 or self.dtype.kind == "b":
            return self._limits
        low, high = np.inf, -np.inf
        rows = max(1, SCAN_PIXELS // max(1, self.shape[1]))
        for y0 in range(0, self.shape[0], rows):
            block = np.asarray(self.data[y0:y0 + rows])
            for plane in self._planes(block):
                if self.dtype.kind == "f" and not np.isfinite(plane).all():
                    raise InvalidInputError(f"{self.path}: expected finite values, got NaN or "
                                            f"infinity")
                low, high = min(low, float(plane.min())), max(high, float(plane.max()))
        if self.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
            self._limits = (0.0, 1.0)
        else:  # as_rgb01's own rule, over the whole image instead of one region
            self._limits = (low, high if high > low else low + 1.0)
        return self._limits

    def _planes(self, block: np.ndarray) -> list[np.ndarray]:
        if block.ndim == 2:
            return [block]
        if self.channels is None:
            return [block[..., i] for i in range(min(3, block.shape[2]))]
        return [block[..., int(c)] for c in self.channels if c is not None]

    def read(self, box: Box | None = None) -> np.ndarray:
        """The engine image of ``box`` (whole image when None).

        Returns
        -------
        np.ndarray
            ``(h, w, 3)``: ``uint8`` for plain 8-bit gray/RGB/RGBA input, else float32 in
            [0, 1] (via :func:`clipseg.image.as_rgb01`).
        """
        y0, x0, y1, x1 = box if box is not None else (0, 0, *self.shape)
        block = np.asarray(self.data[y0:y1, x0:x1])
        if self.dtype == np.uint8 and self.channels is None and self._limits is None:
            if block.ndim == 2:
                return np.repeat(block[..., None], 3, axis=2)
            if block.shape[2] in (3, 4):
                return np.ascontiguousarray(block[..., :3])
            if block.shape[2] == 1:
                return np.repeat(block, 3, axis=2)
        return as_rgb01(block, contrast_limits=self.contrast_limits(), channels=self.channels)


def _tiff_data(path: Path) -> tuple[Any, Callable[[], None] | None]:
    """Channels-last lazy view of a TIFF's first series (memmap when possible, else zarr)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
    keep = [i for i, (a, n) in enumerate(zip(axes, shape)) if not (n == 1 and a not in "YX")]
    axes = "".join(axes[i] for i in keep)
    if axes not in ("YX", "YXS", "SYX", "CYX", "YXC"):
        raise InvalidInputError(f"{path}: expected a 2-D TIFF (axes YX, YXS, CYX), got axes "
                                f"{series.axes} of shape {tuple(shape)}; extract one plane first")
    try:
        data: Any = tifffile.memmap(path, mode="r")
        closer = None
    except ValueError:  # compressed or tiled: read through tifffile's zarr store
        import zarr

        store = tifffile.imread(path, aszarr=True, level=0)
        data = zarr.open(store, mode="r")
        closer = store.close
    data = _Squeezed(data, tuple(data.shape), keep)
    if axes in ("SYX", "CYX"):
        data = _ChannelsLast(data)
    return data, closer


class _Squeezed:
    """Index a lazy array as if its size-1 non-spatial axes were gone."""

    def __init__(self, data: Any, shape: tuple[int, ...], keep: list[int]) -> None:
        self._data, self._keep = data, keep
        self.shape = tuple(shape[i] for i in keep)
        self.dtype = data.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        full: list[Any] = []
        it = iter(index)
        for i in range(len(self._data.shape)):
            full.append(next(it, slice(None)) if i in self._keep else 0)
        return np.asarray(self._data[tuple(full)])


class _ChannelsLast:
    """``(C, H, W)`` lazy array seen as ``(H, W, C)``."""

    def __init__(self, data: Any) -> None:
        self._data = data
        c, h, w = data.shape
        self.shape = (h, w, c)
        self.dtype = data.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        rows = index[0] if len(index) > 0 else slice(None)
        cols = index[1] if len(index) > 1 else slice(None)
        return np.moveaxis(np.asarray(self._data[:, rows, cols]), 0, -1)


ZARR_INSTALL_HINT = "pip install zarr"


def zarr_data(path: Path) -> Any:
    """Channels-last lazy view of an OME-Zarr image's full-resolution array (NGFF 0.4/0.5).

    Size-1 axes other than y and x are dropped; what is left must be ``(y, x)`` or
    ``(c, y, x)`` (channels anywhere before y, x).

    Raises
    ------
    InvalidInputError
        zarr not installed, not an OME-Zarr image, or more than one plane (z, t > 1).
    """
    from ..formats.ome import _ngff_attributes

    try:
        import zarr
    except ImportError:
        raise InvalidInputError(f"{path}: expected the zarr package to read OME-Zarr, it is not "
                                f"installed; run {ZARR_INSTALL_HINT}") from None
    attrs = _ngff_attributes(path) or {}
    multiscales = attrs.get("multiscales")
    try:
        ms = multiscales[0]
        names = [str(a["name"] if isinstance(a, dict) else a).lower() for a in ms["axes"]]
        dataset = str(ms["datasets"][0]["path"])
    except (TypeError, KeyError, IndexError) as exc:
        raise InvalidInputError(f"{path}: expected an OME-Zarr image (NGFF 0.4 or 0.5: "
                                f"'multiscales' with 'axes' and 'datasets'), got none "
                                f"({type(exc).__name__}: {exc}); give the image's own folder, "
                                "not a plate or a collection") from None
    try:
        array = zarr.open_group(str(path), mode="r")[dataset]
    except Exception as exc:  # zarr raises many types for a missing or bad array
        raise InvalidInputError(f"{path}: expected the array {dataset!r} named by its "
                                f"metadata, could not open it ({type(exc).__name__}: "
                                f"{exc})") from None
    shape = tuple(int(v) for v in array.shape)
    if len(names) != len(shape):
        raise InvalidInputError(f"{path}: expected {len(names)} axes ({''.join(names)}) as the "
                                f"metadata says, got an array of shape {shape}")
    keep = [i for i, (a, n) in enumerate(zip(names, shape)) if not (n == 1 and a not in "yx")]
    axes = "".join(names[i] for i in keep)
    if axes not in ("yx", "cyx"):
        raise InvalidInputError(f"{path}: expected a 2-D image (axes yx or cyx once size-1 axes "
                                f"are dropped), got axes {''.join(names)} of shape {shape}; "
                                "extract one plane first")
    data: Any = _Squeezed(array, shape, keep)
    return _ChannelsLast(data) if axes == "cyx" else data


def open_image(path: str | Path, *, channels: Any = None,
               contrast_limits: Any = None) -> ImageSource:
    """Open an image file: TIFFs and OME-Zarr folders (``.zarr``) lazily, other formats (PNG,
    JPEG, BMP, WebP) decoded whole.

    ``channels`` is ``(r, g, b)`` indices or a :class:`clipseg.channels.ChannelChoice` (names,
    ``dyes``), matched against the file's channel names; the file's pixel size and channel
    names are read too (:func:`clipseg.formats.ome.read_spatial`, ``source.spatial``).

    Raises
    ------
    InvalidInputError
        Missing or undecodable file, or a layout that is not a 2-D image.
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        from ..formats.ome import read_spatial

        return ImageSource(path, zarr_data(path), channels=channels,
                           contrast_limits=contrast_limits, spatial=read_spatial(path))
    if not path.is_file():
        if path.is_symlink():  # a loop, or a link to nothing
            raise InvalidInputError(f"{path}: expected an image file, got a symbolic link that "
                                    f"loops or points to nothing ({os.readlink(path)!r}); fix "
                                    "or remove the link")
        raise InvalidInputError(f"{path}: expected an image file, found none")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            data, closer = _tiff_data(path)
        except ClipSegError:
            raise
        except (OSError, ValueError, KeyError, IndexError) as exc:  # tifffile's decode errors
            raise InvalidInputError(f"{path}: expected a readable TIFF, got "
                                    f"{type(exc).__name__}: {exc}") from exc
        from ..formats.ome import read_spatial

        try:
            return ImageSource(path, data, channels=channels, contrast_limits=contrast_limits,
                               closer=closer, spatial=read_spatial(path))
        except BaseException:
            if closer is not None:
                closer()
            raise
    return ImageSource(path, _decode_pil(path), channels=channels,
                       contrast_limits=contrast_limits)


def _decode_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so a truncated file fails here
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info
                                  else "RGB")
            elif img.mode == "LA":
                img = img.getchannel("L")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: expected a readable image, got "
                                f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# the tile plan
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """One unit of tiled work: the ``core`` written to the output, the ``region`` computed."""

    core: Box
    region: Box


def _axis_spans(size: int, tile: int, crop: int, stride: int,
                halo: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per axis: (core span, region span) pairs; regions start/end on global window edges."""
    windows = sorted({(b[0], b[2]) for b in window_boxes(size, 1, crop, stride)})
    out = []
    for c0 in range(0, size, tile):
        c1 = min(size, c0 + tile)
        lo, hi = max(0, c0 - halo), min(size, c1 + halo)
        touching = [(s, e) for s, e in windows if s < hi and e > lo]
        out.append(((c0, c1), (min(s for s, _ in touching), max(e for _, e in touching))))
    return out


def plan_tiles(height: int, width: int, tile: int, crop: int, stride: int,
               halo: int = 0) -> list[Tile]:
    """Cores of about ``tile`` pixels (a multiple of ``stride``) and the regions they need.

    Parameters
    ----------
    height, width : int
        Image size.
    tile : int
        Wanted core side; rounded down to a multiple of ``stride`` (at least ``stride``).
    crop, stride : int
        The sliding window of the run.
    halo : int
        Extra reach of post-processing (PAMR) around each core, in pixels.

    Returns
    -------
    list of Tile
        Cores partition the image (row-major); each region is a union of global windows.
    """
    if crop == 0:
        raise InvalidInputError("crop: expected a window size >= 16 for a tiled run, got 0 "
                                "(one whole-image window cannot be split into tiles); give "
                                "--crop, or a --short-side that fits the image in memory")
    for name, value in (("tile", tile), ("crop", crop), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
    tile = max(stride, tile // stride * stride)
    rows = _axis_spans(height, tile, crop, stride, halo)
    cols = _axis_spans(width, tile, crop, stride, halo)
    return [Tile((cy[0], cx[0], cy[1], cx[1]), (ry[0], rx[0], ry[1], rx[1]))
            for cy, ry in rows for cx, rx in cols]


def pamr_halo(config: SegmentConfig) -> int:
    """Pixels PAMR can reach around a pixel (0 when PAMR is off)."""
    refine = config.refine
    return refine.pamr_iterations * max(refine.pamr_dilations) if refine.pamr else 0


# --------------------------------------------------------------------------------------------
# segmenting one tile, streaming many
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileResult:
    """The core of one segmented tile.

    Attributes
    ----------
    labels : (ch, cw) uint8/uint16 ndarray
    probs : (K, ch, cw) float16 ndarray, or None when scores were not asked for
    model_name : str
    """

    labels: np.ndarray
    probs: np.ndarray | None
    model_name: str


def segment_tile(segmenter: Any, source: ImageSource, tile: Tile, classes: Sequence[ClassSpec],
                 *, scores: bool) -> TileResult:
    """Segment ``tile.region`` with ``segmenter`` and keep the core (see :class:`TileResult`)."""
    ry0, rx0, ry1, rx1 = tile.region
    cy0, cx0, cy1, cx1 = tile.core
    result = segmenter.segment(source.read(tile.region), classes)
    segmenter.clear_cache()  # the region's windows are not needed again
    inner = (slice(cy0 - ry0, cy1 - ry0), slice(cx0 - rx0, cx1 - rx0))
    labels = np.ascontiguousarray(result.labels[inner])
    probs = None
    if scores:
        if result.probs is None:
            raise InvalidInputError("scores: expected the segmenter to return probabilities, "
                                    "got None")
        probs = np.ascontiguousarray(result.probs[(slice(None),) + inner], dtype=np.float16)
    return TileResult(labels, probs, str(result.model_name))


def stream_tiles(results: Iterable[tuple[Tile, TileResult]], labels_out: np.ndarray,
                 scores_out: np.ndarray | None) -> str | None:
    """Write each finished core into the output arrays (memmaps).

    Returns
    -------
    str or None
        The model name the tiles report (None when there were no tiles).
    """
    model_name = None
    for tile, res in results:
        labels, probs, model_name = res.labels, res.probs, res.model_name
        y0, x0, y1, x1 = tile.core
        if labels.shape != (y1 - y0, x1 - x0):
            raise InvalidInputError(f"tile {tile.core}: expected labels of shape "
                                    f"{(y1 - y0, x1 - x0)}, got {describe(labels)}")
        labels_out[y0:y1, x0:x1] = labels
        if scores_out is not None and probs is not None:
            scores_out[:, y0:y1, x0:x1] = probs
    return model_name
