"""Instances from a semantic map: connected components, optionally split by a watershed.

This is *post-processing* of a semantic label map, not an instance model: every connected
region of a "thing" class (nuclei, buildings, cars) becomes one object. Objects of the same
class that touch merge into one region; ``watershed=True`` separates them along the valleys of
the distance transform (one marker per local maximum of the distance to the background, as
:func:`skimage.feature.peak_local_max` finds them, then :func:`skimage.segmentation.watershed`
floods from the markers). That works for roundish blobs that touch over a neck narrower than
the objects; it cannot find a boundary inside a region of uniform width, which a learned
instance model (SAM, micro-sam) can.

Ids are ``1..N`` in raster order of each object's first pixel (row by row), ``0`` is the
background, so the same mask always gives the same ids.

Needs scikit-image (and SciPy, which it brings); both are imported on first use.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import InvalidInputError, describe

__all__ = ["split_instances", "instance_map", "owner_of", "labels_digest"]


def _skimage() -> Any:
    try:
        import skimage.feature
        import skimage.measure
        import skimage.segmentation
    except ImportError as exc:  # pragma: no cover - the test extra has it
        raise InvalidInputError(
            "instances: expected scikit-image to split masks into objects, it is not "
            "installed; pip install scikit-image (or napari-clipseg[napari])") from exc
    return skimage


def _check_mask(mask: Any, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2 or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(
            f"{name}: expected an (H, W) bool or integer array (nonzero = inside), got "
            f"{describe(mask)}")
    return arr


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name}: expected an integer >= {minimum} (pixels), got "
                                f"{describe(value)}")
    return int(value)


def _relabel_raster(labels: np.ndarray, min_area: int) -> np.ndarray:
    """``labels`` renumbered 1..N in raster order of first pixels, objects < min_area dropped.

    Linear in the pixels (boxes by ``find_objects``, then one row of each box searched for its
    first pixel; areas by ``bincount`` only for ``min_area > 1``), and ``labels`` comes back
    as it is when it is numbered so already (connected components are): a sort of the whole
    image cost several times the connected-components pass itself.
    """
    from scipy import ndimage

    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(labels.shape, dtype=np.int32)
    areas = np.bincount(labels.ravel(), minlength=n + 1) if min_area > 1 else None
    width = labels.shape[1]
    ids, first = [], []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or (areas is not None and areas[k] < min_area):
            continue
        row, cols = box[0].start, box[1]
        ids.append(k)
        first.append(row * width + cols.start + int(np.argmax(labels[row, cols] == k)))
    lut = np.zeros(n + 1, dtype=np.int32)
    order = np.argsort(np.asarray(first, dtype=np.int64), kind="stable")
    lut[np.asarray(ids, dtype=np.int64)[order]] = np.arange(1, len(ids) + 1, dtype=np.int32)
    if len(ids) == n and labels.dtype == np.int32 and \
            np.array_equal(lut, np.arange(n + 1, dtype=np.int32)):
        return labels
    return lut[labels]


def split_instances(mask: Any, *, min_area: int = 0, watershed: bool = False,
                    min_distance: int | None = None) -> np.ndarray:
    """Split a binary mask into objects.

    Parameters
    ----------
    mask : (H, W) bool or integer array-like
        Nonzero = inside.
    min_area : int
        Objects with fewer pixels are dropped (after the watershed, when one runs). ``0``
        keeps everything.
    watershed : bool
        Separate touching objects with a distance-transform watershed (see the module
        docstring). Off: plain 8-connected components.
    min_distance : int, optional
        Smallest distance in pixels between two object centres the watershed keeps apart
        (``peak_local_max``'s ``min_distance``). Default: the median over the connected
        regions of their largest distance to the background, i.e. the typical object radius,
        so two touching discs are split and one disc is not.

    Returns
    -------
    (H, W) int32 ndarray
        ``0`` background, ``1..N`` objects in raster order.
    """
    arr = _check_mask(mask)
    min_area = _check_count(min_area, "min_area", 0)
    if min_distance is not None:
        min_distance = _check_count(min_distance, "min_distance", 1)
    inside = arr.astype(bool, copy=False)
    if not inside.any():
        return np.zeros(arr.shape, dtype=np.int32)
    sk = _skimage()
    regions = sk.measure.label(inside, connectivity=2).astype(np.int32, copy=False)
    if watershed:
        regions = _watershed(inside, regions, min_distance)
    return _relabel_raster(regions, min_area)


def _watershed(inside: np.ndarray, regions: np.ndarray, min_distance: int | None
               ) -> np.ndarray:
    from scipy import ndimage

    sk = _skimage()
    n = int(regions.max())
    distance = ndimage.distance_transform_edt(inside)
    index = np.arange(1, n + 1)
    if min_distance is None:
        # each region's largest distance to the background; over the inside pixels only,
        # unsorted (ndimage.maximum sorts per label: half the watershed's time on 800 regions)
        where = np.flatnonzero(inside)
        radii = np.zeros(n + 1)
        np.maximum.at(radii, regions.ravel()[where], distance.ravel()[where])
        radii = radii[1:]
        min_distance = max(1, int(round(float(np.median(radii)))))
    peaks = sk.feature.peak_local_max(distance, min_distance=min_distance, labels=regions,
                                      exclude_border=False)
    markers = np.zeros(regions.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # a region without a peak (a plateau peak_local_max drops, a one-pixel object) keeps its
    # own marker at its deepest pixel, so no region vanishes
    with_peak = np.zeros(n + 1, dtype=bool)
    with_peak[regions[tuple(peaks.T)]] = True
    missing = index[~with_peak[1:]]
    if missing.size:
        spots = ndimage.maximum_position(distance, regions, missing)
        for k, spot in enumerate(spots, start=len(peaks) + 1):
            markers[spot] = k
    return sk.segmentation.watershed(-distance, markers, mask=inside).astype(np.int32,
                                                                           copy=False)


def instance_map(labels: Any, thing_labels: Iterable[int], **kw: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split every "thing" class of a semantic label map into objects.

    Parameters
    ----------
    labels : (H, W) integer array-like
        Semantic labels (0 = unlabeled, ``k + 1`` = class ``k``, as the label files store).
    thing_labels : iterable of int
        The labels (``>= 1``) whose regions are objects; other labels ("stuff": sky, road)
        get no instances.
    **kw
        Passed to :func:`split_instances` (``min_area``, ``watershed``, ``min_distance``).

    Returns
    -------
    instances : (H, W) int32 ndarray
        ``0`` outside every object; ids ``1..N`` unique across classes (the objects of the
        first thing label first, each class's in raster order).
    owner : (N + 1,) int32 ndarray
        ``owner[i]`` is the semantic label of object ``i`` (``owner[0] == 0``), so
        ``owner[instances]`` is the labels restricted to things.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        raise InvalidInputError(f"labels: expected an (H, W) integer label map, got "
                                f"{describe(labels)}")
    if isinstance(thing_labels, (str, bytes)):
        raise InvalidInputError(f"thing_labels: expected a list of integer labels, got "
                                f"{describe(thing_labels)}")
    things = []
    for lab in thing_labels:
        value = _check_count(lab, "thing_labels", 1)
        if value not in things:
            things.append(value)
    instances = np.zeros(arr.shape, dtype=np.int32)
    owner = [0]
    for lab in things:
        objects = split_instances(arr == lab, **kw)
        count = int(objects.max()) if objects.size else 0
        if not count:
            continue
        hit = objects > 0
        instances[hit] = objects[hit] + (len(owner) - 1)
        owner.extend([lab] * count)
    return instances, np.asarray(owner, dtype=np.int32)


def owner_of(instances: Any, labels: Any) -> np.ndarray:
    """The semantic label of every object: the label most of its pixels carry.

    Parameters
    ----------
    instances : (H, W) integer array-like
        Object ids (0 = none), as :func:`instance_map` or an instance file gives them.
    labels : (H, W) integer array-like
        The semantic labels of the same image.

    Returns
    -------
    (instances.max() + 1,) int32 ndarray
        ``owner[i]`` for every id up to the largest (``0`` for id 0 and for ids that do not
        occur). For instances made by :func:`instance_map` from these labels this is exactly
        its ``owner``.
    """
    inst = _check_mask(instances, "instances")
    lab = np.asarray(labels)
    if lab.shape != inst.shape or not np.issubdtype(lab.dtype, np.integer):
        raise InvalidInputError(f"labels: expected an integer label map of the instances' shape "
                                f"{inst.shape}, got {describe(labels)}")
    n = int(inst.max()) if inst.size else 0
    owner = np.zeros(n + 1, dtype=np.int32)
    hit = inst > 0
    if not hit.any():
        return owner
    ids = inst[hit].astype(np.int64)
    cls = lab[hit].astype(np.int64)
    pairs, counts = np.unique(ids * (int(cls.max()) + 1) + cls, return_counts=True)
    pid, pcls = np.divmod(pairs, int(cls.max()) + 1)
    # the most frequent label per id: sort by (id, count) and keep each id's last
    order = np.lexsort((counts, pid))
    last = np.r_[pid[order][1:] != pid[order][:-1], True]
    owner[pid[order][last]] = pcls[order][last]
    return owner


def labels_digest(labels: Any) -> str:
    """SHA-256 of a label map's values and shape (independent of its integer dtype).

    An instance file records the digest of the semantic labels it was split from, so a reader
    can tell when the labels were corrected afterwards and the instances are stale.
    """
    import hashlib

    arr = np.asarray(labels)
    if arr.ndim != 2 or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"labels: expected an (H, W) integer label map, got "
                                f"{describe(labels)}")
    digest = hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(arr, dtype=np.uint32).tobytes())
    return digest.hexdigest()
