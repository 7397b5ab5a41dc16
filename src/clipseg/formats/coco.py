"""COCO-style export of a run: run-length encoding (RLE) written out with numpy.

The run's JSON follows COCO-Stuff's layout for semantic segmentation: one annotation per
(image, class present), ``iscrowd = 0``, ``segmentation`` = **compressed RLE** (the string form
of ``pycocotools.mask.encode``), plus ``area`` and ``bbox`` (``[x, y, width, height]``).
Category ids are the label values (class ``k`` -> id ``k + 1``); label 0 (unlabeled) gets no
annotation.

RLE, as COCO defines it: the mask is flattened in column-major (Fortran) order and described by
alternating run lengths, starting with a run of zeros (possibly of length 0).

* *uncompressed* RLE: ``{"size": [H, W], "counts": [int, ...]}``
* *compressed* RLE: ``{"size": [H, W], "counts": "<ascii>"}`` where each count (from the
  fourth on, as the difference to the count two places before) is written as a little-endian
  sequence of 5-bit groups, each group in one character ``48 + group``, bit 0x20 of the group
  marking "more groups follow" and bit 0x10 of the last group carrying the sign.

Both directions are here, so a result round-trips without pycocotools; the tests check the
encoder on hand-worked strings and against a direct pixel loop.

Label images may be too big to hold whole: :func:`label_rles` reads column strips from any
array-like (a numpy memmap or zarr array), so memory stays bounded by a strip.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, describe
from .io import atomic_write_text

#: Columns read at once by :func:`label_rles` (bounded by about this many pixels).
STRIP_PIXELS = 1 << 22


# --------------------------------------------------------------------------------------------
# uncompressed RLE
# --------------------------------------------------------------------------------------------
def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a 1-D boolean sequence, starting with the (maybe empty) run of False."""
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a binary mask.

    Parameters
    ----------
    mask : (H, W) bool or integer ndarray
        Nonzero = inside.

    Returns
    -------
    dict
        ``{"size": [H, W], "counts": [int, ...]}``; the counts sum to ``H * W``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"rle_encode: expected an (H, W) mask, got {describe(mask)}")
    return {"size": [int(arr.shape[0]), int(arr.shape[1])],
            "counts": _runs(arr.astype(bool).ravel(order="F"))}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Mask of an RLE, compressed (string counts) or not (list counts).

    Returns
    -------
    (H, W) bool ndarray
    """
    size = rle.get("size") if isinstance(rle, Mapping) else None
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise InvalidInputError(f"rle_decode: expected {{'size': [H, W], 'counts': ...}}, "
                                f"got {describe(rle)}")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decompress_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != height * width:
        raise InvalidInputError(f"rle_decode: expected non-negative counts summing to "
                                f"{height * width}, got sum {int(counts.sum())}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


# --------------------------------------------------------------------------------------------
# compressed RLE (the string form)
# --------------------------------------------------------------------------------------------
def compress_counts(counts: Sequence[int]) -> str:
    """Counts list -> COCO's compressed string (see the module docstring)."""
    out: list[str] = []
    values = [int(c) for c in counts]
    for i, count in enumerate(values):
        x = count - values[i - 2] if i > 2 else count
        while True:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers stay negative
            more = (x != -1) if (group & 0x10) else (x != 0)
            out.append(chr(48 + (group | 0x20 if more else group)))
            if not more:
                break
    return "".join(out)


def decompress_counts(text: str | bytes) -> list[int]:
    """COCO's compressed string -> counts list."""
    data = text.decode("ascii") if isinstance(text, bytes) else text
    counts: list[int] = []
    pos = 0
    while pos < len(data):
        x = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise InvalidInputError(f"decompress_counts: expected a complete RLE string, "
                                        f"got one cut short at character {pos}")
            group = ord(data[pos]) - 48
            if not 0 <= group < 64:
                raise InvalidInputError(f"decompress_counts: expected characters '0'..'o', got "
                                        f"{data[pos]!r} at {pos}")
            pos += 1
            x |= (group & 0x1F) << shift
            shift += 5
            if not group & 0x20:
                if group & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_compress(rle: Mapping[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> compressed RLE (same ``size``)."""
    return {"size": list(rle["size"]), "counts": compress_counts(rle["counts"])}


# --------------------------------------------------------------------------------------------
# label images -> per-class RLE, streaming over column strips
# --------------------------------------------------------------------------------------------
def label_rles(labels: Any, num_classes: int) -> dict[int, dict[str, Any]]:
    """Per-class uncompressed RLE, area and bbox of a label image, read in column strips.

    Parameters
    ----------
    labels : (H, W) integer array-like
        ndarray, numpy memmap or zarr array; read ``labels[:, x0:x1]`` at a time.
    num_classes : int
        ``K``; labels ``1..K`` are encoded, 0 is skipped.

    Returns
    -------
    dict
        ``{label: {"counts": [...], "area": int, "bbox": [x, y, w, h]}}`` for each label
        present. Counts are column-major, as COCO's.
    """
    shape = tuple(getattr(labels, "shape", ()))
    if len(shape) != 2:
        raise InvalidInputError(f"label_rles: expected (H, W) labels, got {describe(labels)}")
    height, width = shape
    cols = max(1, STRIP_PIXELS // max(1, height))
    counts: dict[int, list[int]] = {}
    state: dict[int, dict[str, Any]] = {}
    done = 0  # pixels encoded so far (column-major)
    for x0 in range(0, width, cols):
        strip = np.asarray(labels[:, x0:x0 + cols])
        flat = strip.ravel(order="F")
        present = np.unique(flat)
        for lab in present.tolist():
            if lab == 0 or lab > num_classes:
                if lab > num_classes:
                    raise InvalidInputError(f"label_rles: expected labels <= {num_classes}, "
                                            f"got {lab}")
                continue
            if lab not in counts:
                counts[lab] = [done] if done else []
                state[lab] = {"area": 0, "x": [x0 + strip.shape[1], -1],
                              "y": [height, -1]}
            mask = strip == lab
            _append_runs(counts[lab], done, mask.ravel(order="F"))
            st = state[lab]
            st["area"] += int(mask.sum())
            ys = np.flatnonzero(mask.any(axis=1))
            xs = np.flatnonzero(mask.any(axis=0)) + x0
            st["y"] = [min(st["y"][0], int(ys[0])), max(st["y"][1], int(ys[-1]))]
            st["x"] = [min(st["x"][0], int(xs[0])), max(st["x"][1], int(xs[-1]))]
        for lab in counts:  # labels absent from this strip: extend their trailing zero run
            if lab not in present:
                _append_runs(counts[lab], done, np.zeros(flat.size, dtype=bool))
        done += flat.size
    out = {}
    for lab in sorted(counts):
        st = state[lab]
        out[lab] = {"counts": counts[lab], "area": st["area"],
                    "bbox": [st["x"][0], st["y"][0], st["x"][1] - st["x"][0] + 1,
                             st["y"][1] - st["y"][0] + 1]}
    return out


def _append_runs(counts: list[int], offset: int, flat: np.ndarray) -> None:
    """Extend ``counts`` (covering ``offset`` pixels) with the runs of ``flat``."""
    runs = _runs(flat)
    if not counts:
        counts.extend(runs)
        return
    # the previous run parity: an odd number of runs means the last run was zeros
    last_is_zero = len(counts) % 2 == 1
    first_is_zero = True  # _runs always starts with a zero run (maybe empty)
    if runs[0] == 0:
        runs = runs[1:]
        first_is_zero = False
    if not runs:
        return
    if last_is_zero == first_is_zero:
        counts[-1] += runs[0]
        counts.extend(runs[1:])
    else:
        counts.extend(runs)


# --------------------------------------------------------------------------------------------
# the run's JSON
# --------------------------------------------------------------------------------------------
def coco_document(classes: Sequence[Mapping[str, Any]],
                  images: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Build the COCO-style dict of a run.

    Parameters
    ----------
    classes : sequence of dict
        Sidecar class entries (``label``, ``name``, ``synonyms``, ``color``).
    images : iterable of (file_name, labels)
        Source file name (relative path) and its ``(H, W)`` label array-like.

    Returns
    -------
    dict
        ``{"info", "images", "categories", "annotations"}``; ``segmentation`` is compressed RLE.
    """
    categories = [{"id": int(c["label"]), "name": c["name"], "supercategory": "clipseg",
                   "synonyms": list(c.get("synonyms", [c["name"]])),
                   "color": c.get("color")} for c in classes]
    doc: dict[str, Any] = {
        "info": {"description": "clipseg pre-labels (semantic segmentation, COCO-Stuff style)",
                 "segmentation_format": "compressed RLE (column-major)"},
        "images": [], "categories": categories, "annotations": []}
    for image_id, (file_name, labels) in enumerate(images, start=1):
        height, width = (int(v) for v in labels.shape[:2])
        doc["images"].append({"id": image_id, "file_name": str(file_name),
                              "height": height, "width": width})
        for lab, enc in label_rles(labels, len(categories)).items():
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id,
                "category_id": int(lab), "iscrowd": 0, "area": enc["area"],
                "bbox": enc["bbox"],
                "segmentation": {"size": [height, width],
                                 "counts": compress_counts(enc["counts"])}})
    return doc


def write_coco(path: str | os.PathLike, classes: Sequence[Mapping[str, Any]],
               images: Iterable[tuple[str, Any]]) -> Path:
    """Build :func:`coco_document` and write it atomically to ``path``."""
    doc = coco_document(classes, images)
    return atomic_write_text(path, json.dumps(doc) + "\n")


# --------------------------------------------------------------------------------------------
# instances: one annotation per object
# --------------------------------------------------------------------------------------------
def object_rles(instances: Any) -> dict[int, dict[str, Any]]:
    """Per-object uncompressed RLE, area and bbox of an instance image, in one pass.

    Parameters
    ----------
    instances : (H, W) integer array-like
        Object ids, 0 = no object.

    Returns
    -------
    dict
        ``{id: {"counts": [...], "area": int, "bbox": [x, y, w, h]}}`` for each id present,
        in id order. Costs a sort of the object pixels, not a pass over the image per object.
    """
    arr = np.asarray(instances)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"object_rles: expected (H, W) integer object ids, got "
                                f"{describe(instances)}")
    height, width = arr.shape
    flat = arr.ravel(order="F")
    pos = np.flatnonzero(flat)
    if pos.size == 0:
        return {}
    ids = flat[pos]
    order = np.argsort(ids, kind="stable")  # positions stay sorted within each id
    ids, pos = ids[order], pos[order]
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    out: dict[int, dict[str, Any]] = {}
    for a, b in zip(bounds[:-1], bounds[1:]):
        p = pos[a:b]
        breaks = np.flatnonzero(p[1:] != p[:-1] + 1) + 1
        starts = p[np.r_[0, breaks]]
        ends = p[np.r_[breaks - 1, p.size - 1]] + 1
        zeros = starts - np.r_[0, ends[:-1]]
        counts = np.empty(2 * starts.size + 1, dtype=np.int64)
        counts[0:-1:2] = zeros
        counts[1::2] = ends - starts
        counts[-1] = height * width - ends[-1]
        if counts[-1] == 0:
            counts = counts[:-1]
        cols, rows = np.divmod(p, height)
        out[int(ids[a])] = {"counts": counts.tolist(), "area": int(p.size),
                            "bbox": [int(cols.min()), int(rows.min()),
                                     int(cols.max() - cols.min() + 1),
                                     int(rows.max() - rows.min() + 1)]}
    return out


def coco_instances_document(classes: Sequence[Mapping[str, Any]],
                            images: Iterable[tuple[str, Any, Any]]) -> dict[str, Any]:
    """COCO instance annotations: one per object, ``iscrowd = 0``, compressed RLE.

    Parameters
    ----------
    classes : sequence of dict
        The "thing" classes as sidecar class entries; ``label`` is the category id (the same
        ids as the semantic :func:`coco_document`).
    images : iterable of (file_name, instances, owner)
        ``instances`` an ``(H, W)`` integer array of object ids (0 = none) and ``owner`` the
        class label of each id (``owner[i]``, as :func:`clipseg.instances.instance_map`
        returns). Objects whose owner is not among ``classes`` are left out.
    """
    categories = [{"id": int(c["label"]), "name": c["name"], "supercategory": "clipseg",
                   "synonyms": list(c.get("synonyms", [c["name"]])),
                   "color": c.get("color")} for c in classes]
    known = {c["id"] for c in categories}
    doc: dict[str, Any] = {
        "info": {"description": "clipseg instances (connected components / watershed of the "
                 "semantic labels)", "segmentation_format": "compressed RLE (column-major)"},
        "images": [], "categories": categories, "annotations": []}
    for image_id, (file_name, instances, owner) in enumerate(images, start=1):
        arr = np.asarray(instances)
        height, width = (int(v) for v in arr.shape[:2])
        doc["images"].append({"id": image_id, "file_name": str(file_name),
                              "height": height, "width": width})
        owners = np.asarray(owner)
        for obj, enc in object_rles(arr).items():
            cat = int(owners[obj]) if obj < owners.size else 0
            if cat not in known:
                continue
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id,
                "category_id": cat, "iscrowd": 0, "area": enc["area"], "bbox": enc["bbox"],
                "segmentation": {"size": [height, width],
                                 "counts": compress_counts(enc["counts"])}})
    return doc


def write_coco_instances(path: str | os.PathLike, classes: Sequence[Mapping[str, Any]],
                         images: Iterable[tuple[str, Any, Any]]) -> Path:
    """Build :func:`coco_instances_document` and write it atomically to ``path``."""
    doc = coco_instances_document(classes, images)
    return atomic_write_text(path, json.dumps(doc) + "\n")
