"""The window pass's preparation, shared by inference and calibration.

One function decides how an image becomes ViT inputs: resize to the short side
(:func:`clipseg.tiling.resize_short_side`, anti-aliased or not), cut into the slide grid
(:func:`clipseg.tiling.window_boxes`, or one whole-image window for ``crop = 0``), and turn each
window into normalised pixels of a size the patch grid covers (``patch_fit``).
:class:`clipseg.pipeline.Segmenter` and :func:`clipseg.apps.calibrate.calibrate` both call
:func:`plan_windows` and :func:`window_pixels`, so calibration measures the features inference
uses (same resize, same boxes, same edge-window handling).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import WindowConfig
from .errors import InvalidConfigError, InvalidInputError, describe
from .image import to_pixels
from .tiling import Box, model_input_size, resize_short_side, window_boxes

__all__ = ["WindowPlan", "plan_windows", "fed_size", "window_pixels", "resized_guide"]


@dataclass(frozen=True)
class WindowPlan:
    """An image resized and cut into windows.

    Attributes
    ----------
    resized : numpy.ndarray
        ``(H', W', 3)`` float32 in [0, 1], the image the windows are cut from.
    boxes : tuple of Box
        Windows ``(y0, x0, y1, x1)`` in resized pixels, row-major; they cover the image.
    original_size : (int, int)
        ``(H, W)`` of the image before resizing.
    """

    resized: np.ndarray
    boxes: tuple[Box, ...]
    original_size: tuple[int, int]

    @property
    def resized_size(self) -> tuple[int, int]:
        """``(H', W')``."""
        return int(self.resized.shape[0]), int(self.resized.shape[1])

    def groups(self) -> list[list[Box]]:
        """Boxes grouped by window size (one ViT batch shape each), in order of appearance."""
        by_size: dict[tuple[int, int], list[Box]] = {}
        for box in self.boxes:
            by_size.setdefault((box[2] - box[0], box[3] - box[1]), []).append(box)
        return list(by_size.values())


def _resolved_window(window: WindowConfig) -> WindowConfig:
    if not isinstance(window, WindowConfig):
        raise InvalidConfigError(f"window: expected a WindowConfig, got {describe(window)}")
    if window.short_side is None or window.crop is None or window.stride is None:
        raise InvalidConfigError(
            "window: expected short_side, crop and stride resolved against the model "
            "(clipseg.resolve.resolve_config), got None in "
            + ", ".join(n for n in ("short_side", "crop", "stride")
                        if getattr(window, n) is None))
    return window


def plan_windows(image01: np.ndarray, window: WindowConfig) -> WindowPlan:
    """Resize ``image01`` and lay out its windows.

    Parameters
    ----------
    image01 : numpy.ndarray
        ``(H, W, 3)`` float in [0, 1].
    window : WindowConfig
        Resolved window options (``short_side``, ``crop``, ``stride``, ``antialias``).

    Returns
    -------
    WindowPlan
        ``crop = 0`` gives one window spanning the whole resized image.
    """
    window = _resolved_window(window)
    if not isinstance(image01, np.ndarray) or image01.ndim != 3 or image01.shape[2] != 3:
        raise InvalidInputError(f"plan_windows: expected an (H, W, 3) image, got "
                                f"{describe(image01)}")
    resized = resize_short_side(image01, window.short_side, antialias=window.antialias)
    np.clip(resized, 0.0, 1.0, out=resized)
    height, width = resized.shape[:2]
    if window.crop == 0:
        boxes: list[Box] = [(0, 0, height, width)]
    else:
        boxes = window_boxes(height, width, window.crop, window.stride)
    return WindowPlan(resized=resized, boxes=tuple(boxes),
                      original_size=(int(image01.shape[0]), int(image01.shape[1])))


def fed_size(box_height: int, box_width: int, patch_size: int, patch_fit: str
             ) -> tuple[int, int]:
    """Input size the ViT gets for a window of ``box_height x box_width`` pixels.

    ``resize``: the next multiples of the patch size (:func:`clipseg.tiling.model_input_size`).
    ``drop``: the window as it is; the patch convolution leaves out the pixels past the last
    whole patch (the grid is ``floor(side / patch)``).

    Raises
    ------
    InvalidInputError
        ``drop`` with a window smaller than one patch.
    """
    if patch_fit == "resize":
        return model_input_size(box_height, box_width, patch_size)
    if patch_fit != "drop":
        raise InvalidConfigError(f"patch_fit: expected resize or drop, got {patch_fit!r}")
    if box_height < patch_size or box_width < patch_size:
        raise InvalidInputError(
            f"patch_fit drop: expected windows of at least one patch ({patch_size} px), got "
            f"{box_height}x{box_width}; use patch_fit resize or a larger short_side")
    return int(box_height), int(box_width)


def window_pixels(resized: np.ndarray, boxes: list[Box] | tuple[Box, ...], mean, std,
                  device: torch.device | str, patch_size: int, patch_fit: str
                  ) -> torch.Tensor:
    """Normalised model inputs of same-size windows.

    Parameters
    ----------
    resized : numpy.ndarray
        ``(H', W', 3)`` float32 in [0, 1] (:attr:`WindowPlan.resized`).
    boxes : sequence of Box
        Windows of one size.
    mean, std : sequence of 3 floats
        The model's normalisation (``LoadedModel.mean`` / ``.std``).
    device : torch.device or str
    patch_size : int
    patch_fit : {"resize", "drop"}

    Returns
    -------
    torch.Tensor
        ``(n, 3, h_in, w_in)`` float32 on ``device``, ``(h_in, w_in) = fed_size(...)``; with
        ``resize`` a window not a multiple of the patch is resized bilinearly
        (``align_corners=False``).
    """
    if not boxes:
        raise InvalidInputError("window_pixels: expected at least one box, got none")
    y0, x0, y1, x1 = boxes[0]
    size = (y1 - y0, x1 - x0)
    if any((b[2] - b[0], b[3] - b[1]) != size for b in boxes):
        raise InvalidInputError(f"window_pixels: expected boxes of one size {size}, got "
                                f"{sorted({(b[2] - b[0], b[3] - b[1]) for b in boxes})}")
    in_size = fed_size(*size, patch_size, patch_fit)
    pixels = torch.cat([to_pixels(resized[b[0]:b[2], b[1]:b[3]], mean, std, device)
                        for b in boxes])
    if in_size != size:
        pixels = F.interpolate(pixels, size=in_size, mode="bilinear", align_corners=False)
    return pixels


def resized_guide(image01: np.ndarray, window: WindowConfig) -> torch.Tensor:
    """The image the model saw, upsampled back to the original size: PAMR's ``resized`` guide.

    Parameters
    ----------
    image01 : numpy.ndarray
        ``(H, W, 3)`` float in [0, 1], the original image.
    window : WindowConfig
        Resolved window options (the resize is :func:`plan_windows`'s).

    Returns
    -------
    torch.Tensor
        ``(3, H, W)`` float32: the resized image brought back with bilinear interpolation
        (``align_corners=False``, no anti-aliasing), as SCLIP and NACLIP feed PAMR.
    """
    window = _resolved_window(window)
    resized = resize_short_side(image01, window.short_side, antialias=window.antialias)
    np.clip(resized, 0.0, 1.0, out=resized)
    tensor = torch.from_numpy(resized).permute(2, 0, 1)
    if tuple(resized.shape[:2]) == tuple(image01.shape[:2]):
        return tensor.contiguous()
    return F.interpolate(tensor.unsqueeze(0), size=tuple(image01.shape[:2]), mode="bilinear",
                         align_corners=False)[0]
