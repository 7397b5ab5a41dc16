"""From stitched cosine logits to a label image and class probabilities.

``probs = softmax(logit_scale * cos)`` over the classes; each pixel takes the class with the
highest probability (label ``k + 1`` for class ``k``), unless that probability is below the
threshold of the winning class, in which case it stays 0 = unlabeled.

With per-synonym maps (``synonym_reduce = "softmax_then_max"``) the softmax runs over all
synonyms and each class takes the highest probability among its synonyms, as SCLIP, ClearCLIP
and NACLIP do; those class probabilities need not sum to 1.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import LabelConfig
from .errors import InvalidInputError, describe

#: Pixels handled per chunk (rows are grouped so that one chunk holds about this many pixels);
#: bounds the temporaries to ``K x CHUNK_PIXELS`` floats on top of the outputs.
CHUNK_PIXELS = 1 << 20


def label_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding labels ``0..num_classes``: uint8 up to 255, else uint16."""
    if num_classes <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if num_classes <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    raise InvalidInputError(f"expected at most {np.iinfo(np.uint16).max} classes, got "
                            f"{num_classes}")


def class_threshold_vector(names: Sequence[str], config: LabelConfig) -> np.ndarray:
    """Threshold of each class, per-class overrides applied.

    Parameters
    ----------
    names : sequence of str
        Class names, ``K`` of them, in label order.
    config : LabelConfig
        ``threshold`` and ``class_thresholds``.

    Returns
    -------
    np.ndarray
        ``(K,)`` float32.

    Raises
    ------
    InvalidInputError
        If ``class_thresholds`` names a class that is not in ``names``.
    """
    known = set(names)
    unknown = sorted(name for name, _ in config.class_thresholds if name not in known)
    if unknown:
        raise InvalidInputError(
            f"class_thresholds: expected names of the classes being segmented "
            f"({', '.join(map(repr, names))}), got unknown {', '.join(map(repr, unknown))}")
    return np.array([config.threshold_for(name) for name in names], dtype=np.float32)


def labels_from_logits(logits: torch.Tensor | np.ndarray, names: Sequence[str],
                       config: LabelConfig, logit_scale: float,
                       owner: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Label image and class probabilities from cosine logits.

    Parameters
    ----------
    logits : torch.Tensor or np.ndarray
        ``(K, H, W)`` cosine similarities between pixel and class embeddings, or ``(S, H, W)``
        per synonym when ``owner`` is given.
    names : sequence of str
        ``K`` class names in label order (class ``k`` gets label ``k + 1``).
    config : LabelConfig
        Thresholds (``threshold`` and per-class ``class_thresholds``). Its ``logit_scale`` field
        is not read here: pass the resolved value as ``logit_scale``.
    logit_scale : float
        Multiplies the cosines before the softmax over classes (> 0).
    owner : torch.LongTensor or None
        ``(S,)`` class index of each synonym map: the softmax runs over the ``S`` synonyms and
        class ``k`` takes ``max_{s: owner[s] = k} p_s`` (None: the maps are classes already).

    Returns
    -------
    labels : np.ndarray
        ``(H, W)``, uint8 when ``K <= 255`` else uint16; 0 where the winning class's probability
        is below its threshold.
    probs : np.ndarray
        ``(K, H, W)`` float32; sums to 1 over the first axis when ``owner`` is None.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.is_floating_point():
        raise InvalidInputError(f"labels_from_logits: expected (K, H, W) float logits, got "
                                f"{describe(logits)}")
    names = list(names)
    num_maps, height, width = logits.shape
    num_classes = num_maps if owner is None else len(names)
    if owner is not None:
        owner = owner.to("cpu")
        if owner.ndim != 1 or owner.dtype != torch.long or owner.shape[0] != num_maps \
                or owner.numel() == 0 or int(owner.min()) < 0 \
                or int(owner.max()) >= num_classes \
                or bool((torch.bincount(owner, minlength=num_classes) == 0).any()):
            raise InvalidInputError(
                f"labels_from_logits: expected owner as a LongTensor ({num_maps},) giving each "
                f"of the {num_classes} classes at least one synonym map, got {describe(owner)}")
    if len(names) != num_classes:
        raise InvalidInputError(f"labels_from_logits: expected {num_classes} class names (one per "
                                f"logit map), got {len(names)}")
    if not isinstance(config, LabelConfig):
        raise InvalidInputError(f"labels_from_logits: expected a LabelConfig, got "
                                f"{describe(config)}")
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) \
            or not np.isfinite(logit_scale) or logit_scale <= 0:
        raise InvalidInputError(f"logit_scale: expected a finite number > 0, got "
                                f"{logit_scale!r}")
    dtype = label_dtype(num_classes)
    thresholds = torch.from_numpy(class_threshold_vector(names, config))

    labels = np.zeros((height, width), dtype=dtype)
    probs = np.empty((num_classes, height, width), dtype=np.float32)
    rows = max(1, CHUNK_PIXELS // max(1, width))
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        chunk = logits[:, r0:r1].to(device="cpu", dtype=torch.float32)
        p = torch.softmax(chunk * float(logit_scale), dim=0)
        if owner is not None:  # (S, h, W) -> (K, h, W): each class's best synonym
            index = owner.view(-1, 1, 1).expand(p.shape)
            p = torch.full((num_classes, *p.shape[1:]), float("-inf")).scatter_reduce(
                0, index, p, reduce="amax", include_self=True)
        top, arg = p.max(dim=0)
        keep = top >= thresholds[arg]
        lab = torch.where(keep, arg + 1, torch.zeros_like(arg))
        labels[r0:r1] = lab.numpy().astype(dtype, copy=False)
        probs[:, r0:r1] = p.numpy()
    return labels, probs
