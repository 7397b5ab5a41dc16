"""Window geometry for whole-image inference: resize, slide grid, stitching, upsampling.

The slide grid is the one of mmseg's ``slide_inference`` (used by TCL, SCLIP, ClearCLIP,
NACLIP): windows start every ``stride`` pixels, are clipped to the image and shifted back so
the last one ends flush with the border. Overlapping window logits are averaged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError, describe

Box = tuple[int, int, int, int]
"""``(y0, x0, y1, x1)`` in pixels, half-open: rows ``y0:y1``, columns ``x0:x1``."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """Size of an image after :func:`resize_short_side`.

    Parameters
    ----------
    height, width : int
        Original size in pixels.
    short_side : int or None
        Target length of the shorter side; 0 or None keeps the size.

    Returns
    -------
    (int, int)
        ``(H', W')``; the aspect ratio is kept, each side rounded to the nearest pixel and at
        least 1.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    if short_side is None or short_side == 0:
        return height, width
    short_side = _check_positive_int("short_side", short_side)
    scale = short_side / min(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_short_side(image: np.ndarray, short_side: int | None, *,
                      antialias: bool = True) -> np.ndarray:
    """Resize so the shorter side has ``short_side`` pixels (bilinear, ``align_corners=False``).

    With ``antialias`` (the default) shrinking is anti-aliased
    (``torch.nn.functional.interpolate(..., antialias=True)``), so a large image is not aliased
    into the model's input; without it the resize is the plain bilinear one of mmseg / OpenCV
    (``cv2.INTER_LINEAR``) that the peers evaluate with. Enlarging is never anti-aliased.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, C)`` array, any real dtype; values are not rescaled.
    short_side : int or None
        Target length of the shorter side; 0 or None returns the image unchanged (as float32).
    antialias : bool
        Anti-alias when shrinking.

    Returns
    -------
    np.ndarray
        ``(H', W', C)`` float32, ``(H', W') = resized_shape(H, W, short_side)``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise InvalidInputError(f"resize_short_side: expected an (H, W, C) array, got "
                                f"{describe(image)}")
    height, width = image.shape[:2]
    out_h, out_w = resized_shape(height, width, short_side)
    if (out_h, out_w) == (height, width):
        return np.ascontiguousarray(image, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tensor = tensor.permute(2, 0, 1).unsqueeze(0)
    shrinking = out_h < height or out_w < width
    resized = F.interpolate(tensor, size=(out_h, out_w), mode="bilinear", align_corners=False,
                            antialias=bool(antialias) and shrinking)
    return resized[0].permute(1, 2, 0).contiguous().numpy()


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[Box]:
    """The slide grid of mmseg / TCL.

    ``h_grids = max(H - crop + stride - 1, 0) // stride + 1`` (same for columns); window ``i``
    starts at ``i * stride``, is clipped to the image, and is shifted back to start at
    ``max(end - crop, 0)`` so the last window is flush with the border. An image smaller than
    ``crop`` along an axis gets one window spanning that axis.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    crop : int
        Window side.
    stride : int
        Step between window starts, ``1 <= stride <= crop``.

    Returns
    -------
    list of (y0, x0, y1, x1)
        Row-major order; every pixel lies in at least one window.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    crop = _check_positive_int("crop", crop)
    stride = _check_positive_int("stride", stride)
    if stride > crop:
        raise InvalidInputError(f"stride: expected at most crop ({crop}) so windows cover the "
                                f"image, got {stride}")

    def starts(size: int) -> list[tuple[int, int]]:
        grids = max(size - crop + stride - 1, 0) // stride + 1
        spans = []
        for i in range(grids):
            end = min(i * stride + crop, size)
            spans.append((max(end - crop, 0), end))
        return spans

    return [(y0, x0, y1, x1) for y0, y1 in starts(height) for x0, x1 in starts(width)]


def model_input_size(box_height: int, box_width: int, patch_size: int) -> tuple[int, int]:
    """Input size the model sees for a window of the given size.

    A full window (``crop`` a multiple of the patch size) goes in unchanged. A window cut short
    by a small image is resized up to the next multiple of the patch size so that the patch grid
    covers it exactly (the conv stem would otherwise drop the remainder); the tower interpolates
    its positional embedding to the resulting grid.

    Parameters
    ----------
    box_height, box_width : int
        Window size in pixels.
    patch_size : int
        The ViT's patch side.

    Returns
    -------
    (int, int)
        ``(ceil(box_height / p) * p, ceil(box_width / p) * p)``.
    """
    p = _check_positive_int("patch_size", patch_size)
    return (math.ceil(_check_positive_int("box_height", box_height) / p) * p,
            math.ceil(_check_positive_int("box_width", box_width) / p) * p)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of per-class maps (``align_corners=False``, as mmseg's ``resize``).

    Parameters
    ----------
    logits : torch.Tensor
        ``(K, h, w)``, or ``(n, K, h, w)`` for a batch of windows; floating point.
    size : (int, int)
        Output ``(H, W)``.

    Returns
    -------
    torch.Tensor
        ``(K, H, W)`` (or ``(n, K, H, W)``), same dtype and device; the input itself when the
        size already matches.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (3, 4) \
            or not logits.is_floating_point():
        raise InvalidInputError(f"upsample_logits: expected a (K, h, w) or (n, K, h, w) float "
                                f"tensor, got {describe(logits)}")
    out_h = _check_positive_int("height", size[0])
    out_w = _check_positive_int("width", size[1])
    if tuple(logits.shape[-2:]) == (out_h, out_w):
        return logits
    batch = logits if logits.ndim == 4 else logits.unsqueeze(0)
    out = F.interpolate(batch, size=(out_h, out_w), mode="bilinear", align_corners=False)
    return out if logits.ndim == 4 else out[0]


class Stitcher:
    """Average window logits over their overlaps.

    Holds a ``(K, H, W)`` float32 sum and an ``(H, W)`` float32 count, i.e. ``(K + 1) * H * W``
    floats.

    Parameters
    ----------
    num_classes : int
        ``K``.
    height, width : int
        Size of the (resized) image the windows tile.
    device : torch.device or str
        Where the accumulators live (default CPU).
    """

    def __init__(self, num_classes: int, height: int, width: int,
                 device: torch.device | str = "cpu") -> None:
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.height = _check_positive_int("height", height)
        self.width = _check_positive_int("width", width)
        self._sum = torch.zeros(self.num_classes, self.height, self.width, dtype=torch.float32,
                                device=device)
        self._count = torch.zeros(self.height, self.width, dtype=torch.float32, device=device)
        self._done = False

    def add(self, box: Box, logits: torch.Tensor) -> None:
        """Add one window's logits.

        Parameters
        ----------
        box : (y0, x0, y1, x1)
            Window position, inside the image.
        logits : torch.Tensor
            ``(K, y1 - y0, x1 - x0)`` logits already upsampled to the box size.
        """
        if self._done:
            raise InvalidInputError("Stitcher.add: expected windows before result(), got a "
                                    "window after the result was taken")
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 < y1 <= self.height and 0 <= x0 < x1 <= self.width):
            raise InvalidInputError(f"Stitcher.add: expected a box inside (0, 0, {self.height}, "
                                    f"{self.width}), got {box!r}")
        expected = (self.num_classes, y1 - y0, x1 - x0)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            raise InvalidInputError(f"Stitcher.add: expected logits of shape {expected}, got "
                                    f"{describe(logits)}")
        self._sum[:, y0:y1, x0:x1] += logits.to(self._sum.device, torch.float32)
        self._count[y0:y1, x0:x1] += 1.0

    def result(self) -> torch.Tensor:
        """Mean logits; divides in place, so no second ``(K, H, W)`` buffer is allocated.

        Returns
        -------
        torch.Tensor
            ``(K, H, W)`` float32. Calling again returns the same tensor; adding after this is
            an error.
        """
        if self._done:
            return self._sum
        if bool((self._count == 0).any()):
            missing = int((self._count == 0).sum())
            raise InvalidInputError(f"Stitcher.result: expected windows covering the whole "
                                    f"{self.height}x{self.width} image, got {missing} pixels "
                                    f"without a window")
        self._sum /= self._count
        self._done = True
        return self._sum
