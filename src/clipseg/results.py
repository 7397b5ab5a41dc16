"""What the engine's runs yield and return: progress steps, results, window embeddings.

Plain data, re-exported by :mod:`clipseg.pipeline` (their documented home).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import SegmentConfig
from .tiling import Box

__all__ = ["Progress", "SegmentationResult", "WindowEmbeddings"]


@dataclass
class Progress:
    """One progress step: ``stage`` in ``"text"``, ``"windows"``, ``"refine"``, ``"labels"``;
    ``done`` of ``total`` units (windows for ``"windows"``, else steps)."""

    stage: str
    done: int
    total: int


@dataclass
class SegmentationResult:
    """Output of a run.

    Attributes
    ----------
    labels : np.ndarray
        ``(H, W)`` uint8 (``K <= 255``) or uint16; 0 = unlabeled, class ``k`` -> ``k + 1``.
    probs : np.ndarray or None
        ``(K, H, W)`` float32 class probabilities.
    class_names : list of str
        ``K`` names in label order.
    config : SegmentConfig
        The configuration used, with registry defaults filled in (no ``None`` left in
        ``middle_layer``, ``crop``, ``stride``, ``logit_scale``).
    model_name : str
    reused_embeddings : bool
        True when no ViT pass ran: the window embeddings came from the cache of the last image.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    class_names: list[str]
    config: SegmentConfig
    model_name: str
    reused_embeddings: bool = False


@dataclass
class WindowEmbeddings:
    """Dense embeddings of every window of one image.

    Attributes
    ----------
    groups : list of (list of Box, torch.Tensor)
        Windows encoded together: their boxes ``(y0, x0, y1, x1)`` in resized-image pixels and
        a ``(n, h, w, D)`` CPU tensor of unit embeddings (float32, or float16 when the model ran
        in half precision).
    resized_size : (int, int)
        ``(H', W')`` of the resized image the boxes refer to.
    original_size : (int, int)
        ``(H, W)`` of the input image.
    """

    groups: list[tuple[list[Box], torch.Tensor]]
    resized_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def boxes(self) -> list[Box]:
        """All window boxes, in encoding order."""
        return [box for boxes, _ in self.groups for box in boxes]
