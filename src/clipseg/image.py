"""Images in and out of the engine.

The engine takes one kind of image: ``(H, W, 3)`` RGB, ``uint8`` or floating point in [0, 1]
(:func:`validate_rgb` checks this strictly and never guesses). Everything else — gray, RGBA,
16-bit microscopy, float data in other ranges, multichannel stacks, channel-first arrays — is
converted explicitly with :func:`as_rgb01`, which the plugin and the CLI call with the user's
choices (contrast limits, which channels go to R, G and B).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError, describe

__all__ = ["validate_rgb", "as_rgb01", "to_pixels"]

_HINT = "convert it with clipseg.image.as_rgb01"


def _got(image: np.ndarray) -> str:
    return f"an array of shape {image.shape} and dtype {image.dtype}"


def validate_rgb(image: Any) -> np.ndarray:
    """Check that ``image`` is what the engine accepts and return it unchanged.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` ``uint8``, or ``float16/32/64`` with finite values in [0, 1]; H, W >= 2.

    Returns
    -------
    np.ndarray
        The same array (no copy).

    Raises
    ------
    InvalidInputError
        For anything else; the message names what was expected, what arrived and the
        :func:`as_rgb01` call that converts it.
    """
    expected = "an RGB image of shape (H, W, 3), uint8 or float in [0, 1]"
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"image: expected {expected} as a numpy array, got "
                                f"{describe(image)}; use np.asarray(image) or {_HINT}")
    dtype = image.dtype
    if dtype.kind not in "uif":
        raise InvalidInputError(f"image: expected {expected}, got non-numeric data "
                                f"({_got(image)}); {_HINT} after casting to numbers")
    if image.ndim == 2:
        raise InvalidInputError(f"image: expected {expected}, got a 2-D gray image "
                                f"({_got(image)}); as_rgb01(image) replicates it into RGB")
    if image.ndim != 3:
        raise InvalidInputError(f"image: expected {expected}, got {image.ndim}-D data "
                                f"({_got(image)}); pass one 2-D plane (e.g. image[0]) and "
                                f"{_HINT}(..., channel_axis=...) if channels are not last")
    channels = image.shape[2]
    if channels != 3:
        if channels == 4:
            what = "an RGBA image; as_rgb01(image) drops the alpha channel"
        elif channels == 1:
            what = "a single-channel image; as_rgb01(image) replicates it into RGB"
        elif image.shape[0] in (1, 3, 4):
            what = ("what looks like a channel-first image; use "
                    "as_rgb01(image, channel_axis=0)")
        else:
            what = (f"{channels} channels; choose three with "
                    "as_rgb01(image, channels=(r, g, b))")
        raise InvalidInputError(f"image: expected {expected}, got {what} ({_got(image)})")
    if dtype.kind in "ui" and dtype != np.uint8:
        raise InvalidInputError(f"image: expected {expected}, got {dtype.itemsize * 8}-bit "
                                f"integers ({_got(image)}); use as_rgb01(image, "
                                "contrast_limits=(low, high)) to map them into [0, 1]")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InvalidInputError(f"image: expected height and width of at least 2 pixels, got "
                                f"{_got(image)}; check that the right axes are the image plane")
    if dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InvalidInputError(f"image: expected finite values, got NaN or infinity in "
                                    f"{_got(image)}; clean the data, then {_HINT}")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInputError(f"image: expected float values in [0, 1], got values in "
                                    f"[{low:g}, {high:g}] ({_got(image)}); use as_rgb01(image, "
                                    "contrast_limits=(low, high)) to rescale")
    return image


def _contrast_pairs(limits: Any, n: int) -> list[tuple[float, float]] | None:
    """``(low, high)`` or one pair per output channel -> ``n`` validated pairs."""
    if limits is None:
        return None
    arr = np.asarray(limits, dtype=object)
    if arr.shape == (2,):
        pairs = [tuple(limits)] * n
    elif arr.shape == (n, 2):
        pairs = [tuple(p) for p in limits]
    else:
        raise InvalidInputError(f"contrast_limits: expected (low, high) or {n} such pairs, got "
                                f"{limits!r}")
    out = []
    for low, high in pairs:
        if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                   and np.isfinite(v) for v in (low, high)) or not high > low:
            raise InvalidInputError(f"contrast_limits: expected finite numbers with low < high, "
                                    f"got {limits!r}")
        out.append((float(low), float(high)))
    return out


def _select(data: np.ndarray, channels: Sequence[int | None] | None) -> list[np.ndarray | None]:
    """Three (H, W) planes (None = empty slot) from (H, W, C) ``data``."""
    count = data.shape[2]
    if channels is None:
        if count == 1:
            return [data[..., 0]] * 3
        if count in (3, 4):  # RGB, or RGBA whose alpha is dropped (not premultiplied)
            return [data[..., i] for i in range(3)]
        raise InvalidInputError(f"image: expected 1, 3 or 4 channels last, got {count} "
                                f"(shape {data.shape}); choose three with channels=(r, g, b) or "
                                "give channel_axis for channel-first data")
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) \
            or len(channels) != 3:
        raise InvalidInputError(f"channels: expected three channel indices (r, g, b), None for "
                                f"an empty slot, got {channels!r}")
    planes: list[np.ndarray | None] = []
    for slot, index in zip("rgb", channels):
        if index is None:
            planes.append(None)
            continue
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not -count <= index < count:
            raise InvalidInputError(f"channels: expected {slot} to be None or an index in "
                                    f"[{-count}, {count - 1}], got {index!r}")
        planes.append(data[..., int(index)])
    if all(p is None for p in planes):
        raise InvalidInputError("channels: expected at least one channel index, got "
                                f"{channels!r}")
    return planes


def as_rgb01(array: Any, *, contrast_limits: Any = None,
             channels: Sequence[int | None] | None = None,
             channel_axis: int | None = None) -> np.ndarray:
    """Convert gray, RGBA, 16-bit, float or multichannel data to the engine's RGB.

    Parameters
    ----------
    array : array-like
        ``(H, W)`` gray, ``(H, W, C)`` with channels last, or any 3-D layout with
        ``channel_axis`` saying where the channels are. Numeric or boolean dtype.
    contrast_limits : (low, high) or three such pairs, optional
        Values mapped to 0 and 1 (clipped outside), for all output channels or per channel.
        Without them: ``uint8`` is divided by 255; bool is 0/1; float data already inside
        [0, 1] is kept; any other data (16-bit, other integers, other floats) is stretched
        linearly from its minimum to its maximum over the chosen channels together (a constant
        image becomes 0). No percentiles are used.
    channels : (r, g, b) of int or None, optional
        Which input channels become R, G and B; None fills that slot with zeros. Default: gray
        is replicated, RGB kept, RGBA loses its alpha (no premultiplication).
    channel_axis : int, optional
        Axis of the channels in a 3-D ``array`` (moved last), e.g. 0 for ``(C, H, W)``.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` float32 in [0, 1], C-contiguous; passes :func:`validate_rgb`.

    Raises
    ------
    InvalidInputError
        Unsupported dimensions or dtype, NaN/infinity, bad ``channels``/``contrast_limits``/
        ``channel_axis``, or a side shorter than 2 pixels.
    """
    pairs = _contrast_pairs(contrast_limits, 3)
    data = np.asarray(array)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
        if pairs is None:
            pairs = [(0.0, 1.0)] * 3
    if data.dtype.kind not in "uif":
        raise InvalidInputError(f"image: expected numeric data, got {_got(data)}")
    if channel_axis is not None:
        if data.ndim != 3 or isinstance(channel_axis, bool) \
                or not isinstance(channel_axis, (int, np.integer)) \
                or not -3 <= channel_axis < 3:
            raise InvalidInputError(f"channel_axis: expected an axis of a 3-D array, got "
                                    f"channel_axis={channel_axis!r} for {_got(data)}")
        data = np.moveaxis(data, int(channel_axis), -1)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise InvalidInputError(f"image: expected (H, W) or (H, W, C) data, got {data.ndim}-D "
                                f"({_got(data)}); pass one 2-D plane or a 3-D array")
    planes = _select(data, channels)
    used = [p for p in planes if p is not None]
    if data.dtype.kind == "f" and not all(np.isfinite(p).all() for p in used):
        raise InvalidInputError(f"image: expected finite values, got NaN or infinity in the "
                                f"chosen channels of {_got(data)}")
    if pairs is None:
        if data.dtype == np.uint8:
            pairs = [(0.0, 255.0)] * 3
        else:
            low = min(float(p.min()) for p in used)
            high = max(float(p.max()) for p in used)
            if data.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
                pairs = [(0.0, 1.0)] * 3
            else:
                pairs = [(low, high if high > low else low + 1.0)] * 3
    height, width = data.shape[:2]
    work = np.float32 if data.dtype.itemsize <= 2 else np.float64  # exact for 8/16-bit data
    out = np.zeros((height, width, 3), dtype=np.float32)
    for i, (plane, (low, high)) in enumerate(zip(planes, pairs)):
        if plane is not None:
            values = (plane.astype(work) - work(low)) / work(high - low)
            out[..., i] = np.clip(values, 0.0, 1.0)
    return validate_rgb(out)


def to_pixels(image01: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: str | torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalise an engine image into the model's input tensor.

    Parameters
    ----------
    image01 : np.ndarray
        ``(H, W, 3)`` uint8 or float in [0, 1] (checked with :func:`validate_rgb`).
    mean, std : sequence of 3 floats
        Per-channel normalisation of [0, 1] values (``LoadedModel.mean`` / ``.std``).
    device : str or torch.device
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        ``(1, 3, H, W)`` ``(x - mean) / std`` in ``dtype`` on ``device``. The array is moved
        in its own dtype and converted on the device.
    """
    image = validate_rgb(image01)
    mean_t = _stat(mean, "mean")
    std_t = _stat(std, "std")
    if (std_t <= 0).any():
        raise InvalidInputError(f"std: expected positive values, got {tuple(std)!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    if image.dtype == np.float64:  # not every device has float64 (MPS)
        image = image.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = tensor.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    if image.dtype == np.uint8:
        x = x / 255.0
    x = (x - mean_t.to(x.device).view(1, 3, 1, 1)) / std_t.to(x.device).view(1, 3, 1, 1)
    return x.to(dtype).contiguous()


def _stat(values: Sequence[float], name: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: expected three numbers, got {values!r}") from exc
    if tensor.shape != (3,) or not torch.isfinite(tensor).all():
        raise InvalidInputError(f"{name}: expected three finite numbers, got {values!r}")
    return tensor
