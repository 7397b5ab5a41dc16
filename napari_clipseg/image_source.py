"""From a napari Image layer to the ``(H, W, 3)`` float32 planes the engine takes.

This module is the input half of the layer conversion. It reads nothing from the viewer after
:func:`image_source` returns: an :class:`ImageSource` holds the layer's (possibly lazy) array and
every fact needed to read one plane, so :meth:`ImageSource.read_plane` can run in a worker thread.
Only the plane asked for is materialised, so dask/zarr-backed stacks stay lazy.

Axes vocabulary (for a layer whose data has shape ``S``):

- *spatial* axes: the last two non-channel axes, ``(H, W)``;
- *channel* axis: the RGB(A) axis of an ``rgb`` layer (always last) or the axis the user picks
  as the channel axis of multichannel data (any axis but the last two, or the last one;
  combined into RGB by :func:`clipseg.image.as_rgb01`);
- *plane* axes: every other axis (Z, T, ...): one plane per index combination.

Labels produced for this source have shape ``label_shape`` = the plane axes followed by ``H, W``.

:func:`combined_source` makes one source of up to three single-channel layers (napari's
one-layer-per-channel split of a multichannel file) shown as R, G and B.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipseg.errors import InvalidInputError, describe

PlaneIndex = tuple[int, ...]


@dataclass(frozen=True)
class ImageSource:
    """A read-only description of what to segment in one Image layer.

    Attributes
    ----------
    name : str
        The layer's name (the result layer is called ``f"{name} labels"``).
    data : array-like
        The array of the chosen resolution level (numpy, dask, zarr...); never copied.
    rgb : bool
        True when the last axis is RGB(A).
    channel_axis : int or None
        Axis of ``data`` holding channels for a non-RGB layer, else None.
    channels : (r, g, b) of int or None, or None
        Which channels along ``channel_axis`` map to R, G, B (None in a slot = black).
    contrast_limits : (float, float) or None
        The layer's contrast limits, used to normalise 16-bit and float data to [0, 1].
    plane_axes : tuple of int
        Axes of ``data`` iterated over as planes (Z, T...).
    current : tuple of int
        Index along ``plane_axes`` of the plane shown in the viewer.
    scale, translate : tuple of float
        World transform of the labels (one entry per axis of ``label_shape``).
    units : tuple of str
        The layer's ``units`` of those axes (``()`` when napari has none): with ``scale``
        the physical pixel size the result layer takes over.
    level : int
        Resolution level used for a multiscale layer (0 otherwise).
    key : tuple
        Identity of the pixels this source reads (layer, level, channels, contrast).
    origin : tuple of (unique_id, shape)
        The layers read and the shape of their data when the source was made: a result is
        dropped when one of them has gone or changed shape meanwhile (:func:`source_changed`).
    """

    name: str
    data: Any
    rgb: bool
    channel_axis: int | None
    channels: tuple[int | None, int | None, int | None] | None
    contrast_limits: tuple[float, float] | None
    plane_axes: tuple[int, ...]
    current: PlaneIndex
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    level: int = 0
    units: tuple[str, ...] = ()
    key: tuple = field(default=(), compare=False)
    origin: tuple = field(default=(), compare=False)

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The two axes of ``data`` that become ``(H, W)``."""
        skip = set(self.plane_axes) | ({self.channel_axis} if self.channel_axis is not None
                                       else set())
        ndim = len(self.data.shape) - (1 if self.rgb else 0)
        axes = [a for a in range(ndim) if a not in skip]
        return axes[-2], axes[-1]

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of a Labels layer that covers this source: plane axes, then ``(H, W)``."""
        shape = self.data.shape
        return tuple(int(shape[a]) for a in self.plane_axes + self.spatial_axes)

    @property
    def plane_shape(self) -> tuple[int, ...]:
        """Number of planes along each plane axis (``()`` for a single 2-D image)."""
        return tuple(int(self.data.shape[a]) for a in self.plane_axes)

    def all_planes(self) -> list[PlaneIndex]:
        """Every plane index, in C order."""
        return [tuple(int(i) for i in idx) for idx in np.ndindex(*self.plane_shape)]

    def read_plane(self, index: PlaneIndex) -> np.ndarray:
        """Read one plane and convert it to the engine's RGB.

        Parameters
        ----------
        index : tuple of int
            One index per plane axis.

        Returns
        -------
        np.ndarray
            ``(H, W, 3)`` float32 in [0, 1]. Only this plane is read from a lazy array.
        """
        from clipseg.image import as_rgb01

        if len(index) != len(self.plane_axes):
            raise InvalidInputError(f"plane index: expected {len(self.plane_axes)} values, "
                                    f"got {index!r}")
        slicer: list[Any] = [slice(None)] * len(self.data.shape)
        for axis, i in zip(self.plane_axes, index):
            if not 0 <= i < self.data.shape[axis]:
                raise InvalidInputError(f"plane index: expected 0 <= {i} < "
                                        f"{self.data.shape[axis]} on axis {axis}")
            slicer[axis] = int(i)
        plane = np.asarray(self.data[tuple(slicer)])  # computes only this plane (dask/zarr)
        if self.channel_axis is not None:
            # position of the channel axis once the plane axes are indexed away
            ch = self.channel_axis - sum(1 for a in self.plane_axes if a < self.channel_axis)
            plane = np.moveaxis(plane, ch, -1)
            return as_rgb01(plane, contrast_limits=self.contrast_limits, channels=self.channels,
                            channel_axis=-1)
        return as_rgb01(plane, contrast_limits=self.contrast_limits)


def parse_channels(text: str) -> tuple[int | None, int | None, int | None] | None:
    """Which channels become R, G, B, from text such as ``"2, 0, 1"``.

    One index is replicated as gray (``"1"`` -> ``(1, 1, 1)``); two fill R and G (``"0, 1"``
    -> ``(0, 1, None)``); ``"-"`` or ``"none"`` leaves a slot black (``"-, 0, 1"``).
    Blank text -> None (the converter's default: first channels / gray / RGB).

    Raises
    ------
    InvalidInputError
        Unless 1 to 3 comma-separated non-negative integers (or ``-``) are given.
    """
    text = text.strip()
    if not text:
        return None
    values: list[int | None] = []
    for token in (t.strip().lower() for t in text.replace(";", ",").split(",")):
        if token in ("-", "none"):
            values.append(None)
        elif token.isdigit():
            values.append(int(token))
        else:
            values = []
            break
    if not 1 <= len(values) <= 3 or all(v is None for v in values):
        raise InvalidInputError(f"channels: expected 1 to 3 channel indices such as '0, 1, 2' "
                                f"('-' for a black slot), got {text!r}")
    if len(values) == 1:
        values = values * 3
    while len(values) < 3:
        values.append(None)
    return (values[0], values[1], values[2])


def _pick_level(layer: Any, short_side: int | None) -> int:
    """Coarsest level of a multiscale layer whose short side still has ``short_side`` pixels."""
    if not getattr(layer, "multiscale", False):
        return 0
    if short_side is None:
        return 0
    level = 0
    for i, shape in enumerate(layer.level_shapes):
        spatial = shape[-2:]
        if min(spatial) >= short_side:
            level = i
    return level


def image_source(layer: Any, world_point: Sequence[float], *, channel_axis: int | None = None,
                 channels: tuple[int | None, int | None, int | None] | None = None,
                 short_side: int | None = None) -> ImageSource:
    """Describe what to segment in ``layer`` at the viewer position ``world_point``.

    Parameters
    ----------
    layer : napari.layers.Image
        The image layer (any dtype, RGB(A), grayscale, multichannel, N-D, lazy, multiscale).
    world_point : sequence of float
        ``viewer.dims.point``: picks the current plane of a stack.
    channel_axis : int or None
        For a non-RGB layer, the data axis that holds channels (not one of the last two, or the
        last one).
    channels : (r, g, b) of int or None, or None
        Channels mapped to R, G, B (see :func:`parse_channels`); default: the converter's.
    short_side : int or None
        The engine's resize target; for a multiscale layer the coarsest level with at least this
        short side is read.

    Returns
    -------
    ImageSource

    Raises
    ------
    InvalidInputError
        For a non-image layer, complex or boolean data, a bad channel axis, or an image smaller
        than 2 x 2 pixels.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        raise InvalidInputError(f"layer: expected an Image layer, got {describe(layer)}")
    level = _pick_level(layer, short_side)
    data = layer.data[level] if layer.multiscale else layer.data
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise InvalidInputError(f"{layer.name}: expected integer or float pixels, got dtype "
                                f"{dtype}; convert the layer first")
    rgb = bool(layer.rgb)
    ndim = layer.ndim  # excludes the RGB axis
    if rgb and channel_axis is not None:
        raise InvalidInputError(f"{layer.name}: an RGB layer already has its colour axis; "
                                f"expected no channel axis, got {channel_axis}")
    if channel_axis is not None:
        if not (isinstance(channel_axis, int) and ndim >= 3
                and (0 <= channel_axis < ndim - 2 or channel_axis == ndim - 1)):
            raise InvalidInputError(f"{layer.name}: expected a channel axis in 0..{ndim - 3} "
                                    f"or the last axis {ndim - 1}, got {channel_axis!r}")
    channel_set = {channel_axis} if channel_axis is not None else set()
    non_channel = [a for a in range(ndim) if a not in channel_set]
    if len(non_channel) < 2:
        raise InvalidInputError(f"{layer.name}: expected at least two spatial axes, got shape "
                                f"{tuple(data.shape)}")
    plane_axes = tuple(non_channel[:-2])
    spatial = non_channel[-2:]
    if min(int(data.shape[a]) for a in spatial) < 2:
        raise InvalidInputError(f"{layer.name}: expected an image of at least 2 x 2 pixels, got "
                                f"{tuple(int(data.shape[a]) for a in spatial)}")
    if channel_axis is not None and channels is not None:
        n_ch = int(data.shape[channel_axis])
        if max(c for c in channels if c is not None) >= n_ch:
            raise InvalidInputError(f"{layer.name}: expected channel indices below {n_ch} (axis "
                                    f"{channel_axis} has {n_ch} channels), got {channels}")

    # world position -> data index of the current plane (at level 0, then at the chosen level)
    pos = np.asarray(layer.world_to_data(world_point), dtype=float)
    factors = np.ones(ndim)
    if layer.multiscale:
        factors = np.asarray(layer.downsample_factors[level], dtype=float)[:ndim]
    current = tuple(int(np.clip(np.round(pos[a] / factors[a]), 0, data.shape[a] - 1))
                    for a in plane_axes)
    keep = list(plane_axes) + list(spatial)
    scale = tuple(float(layer.scale[a] * factors[a]) for a in keep)
    translate = tuple(float(layer.translate[a]) for a in keep)
    units = _units(layer, keep)
    limits = tuple(float(v) for v in layer.contrast_limits)
    if not limits[1] > limits[0]:
        raise InvalidInputError(f"{layer.name}: expected contrast limits low < high, got "
                                f"{limits}; adjust them in the layer controls")
    key = (id(layer), id(data), level, rgb, channel_axis, channels, limits)
    return ImageSource(name=layer.name, data=data, rgb=rgb, channel_axis=channel_axis,
                       channels=channels, contrast_limits=limits, plane_axes=plane_axes,
                       current=current, scale=scale, translate=translate, level=level,
                       units=units, key=key,
                       origin=((layer.unique_id, _shape(layer)),))


def _units(layer: Any, axes: Sequence[int]) -> tuple[str, ...]:
    """The layer's units of ``axes`` as text (``()`` before napari 0.5, which has none)."""
    units = getattr(layer, "units", None)
    if units is None:
        return ()
    return tuple(str(units[a]) for a in axes)


def _shape(layer: Any) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in data.shape)


def source_changed(source: ImageSource, layers: Sequence[Any]) -> str | None:
    """Why a result of ``source`` must not be applied any more, or None if it still fits.

    ``layers`` are the viewer's layers. A layer of ``source.origin`` that is gone or whose data
    changed shape since the request makes the result stale.
    """
    by_id = {layer.unique_id: layer for layer in layers}
    for unique_id, shape in source.origin:
        layer = by_id.get(unique_id)
        if layer is None:
            return "its image layer was deleted during the run"
        if _shape(layer) != shape:
            return (f"the image layer '{layer.name}' changed shape during the run (from "
                    f"{shape} to {_shape(layer)})")
    return None


@dataclass(frozen=True)
class CombinedSource(ImageSource):
    """Up to three single-channel layers of the same shape shown as R, G, B.

    ``parts`` holds one :class:`ImageSource` (or None: a black channel) per colour; each part is
    normalised by its own layer's contrast limits.
    """

    parts: tuple = ()

    def read_plane(self, index: PlaneIndex) -> np.ndarray:
        """``(H, W, 3)`` float32 in [0, 1]: each part's gray plane in its colour channel."""
        planes = [None if part is None else part.read_plane(index)[..., 0]
                  for part in self.parts]
        shape = next(p.shape for p in planes if p is not None)
        out = np.zeros((*shape, 3), dtype=np.float32)
        for c, plane in enumerate(planes):
            if plane is not None:
                out[..., c] = plane
        return out


def combined_source(layers: Sequence[Any | None], world_point: Sequence[float], *,
                    short_side: int | None = None) -> CombinedSource:
    """One source of the layers ``(red, green, blue)`` (None = a black channel).

    Raises
    ------
    InvalidInputError
        No layer, an RGB or multiscale layer, or layers of different shapes.
    """
    chosen = [layer for layer in layers if layer is not None]
    if not chosen:
        raise InvalidInputError("red, green, blue: expected at least one image layer, got none; "
                                "pick a layer for at least one colour")
    parts = []
    for colour, layer in zip(("red", "green", "blue"), layers):
        if layer is None:
            parts.append(None)
            continue
        if layer.rgb or getattr(layer, "multiscale", False):
            raise InvalidInputError(f"{colour}: expected a single-channel image layer, got "
                                    f"'{layer.name}' ({'RGB' if layer.rgb else 'multiscale'})")
        parts.append(image_source(layer, world_point, short_side=short_side))
    first = next(p for p in parts if p is not None)
    for part in parts:
        if part is not None and part.label_shape != first.label_shape:
            raise InvalidInputError(f"red, green, blue: expected layers of one shape, got "
                                    f"{first.name} {first.label_shape} and {part.name} "
                                    f"{part.label_shape}")
    name = "+".join(p.name for p in parts if p is not None)
    return CombinedSource(
        name=name, data=first.data, rgb=False, channel_axis=None, channels=None,
        contrast_limits=first.contrast_limits, plane_axes=first.plane_axes,
        current=first.current, scale=first.scale, translate=first.translate, level=0,
        units=first.units,
        key=tuple(p.key if p is not None else None for p in parts),
        origin=tuple(o for p in parts if p is not None for o in p.origin), parts=tuple(parts))
