"""YOLO segmentation labels (Ultralytics' "YOLO-seg" text layout) of a semantic label map.

One text file per image, one object a line::

    CLASS x1 y1 x2 y2 ...        # class = label - 1; corners normalised to 0..1 (x by width)

and a ``data.yaml`` naming the classes. Each line is the outer boundary of one connected piece
of an object: :func:`skimage.measure.find_contours` at 0.5 on the pixel mask, which runs through
the midpoints of the pixel edges between inside and outside (so it cuts each pixel corner by
half a pixel), with its collinear points dropped. That is the contour itself, not a
simplification of it: only the points where it turns are kept, and a disc of radius 13 needs
about 45. (Douglas-Peucker within half a pixel saved a third of the points but, being a Python
loop per point in scikit-image, cost 70 times as much.) Holes are not represented: YOLO
polygons have none.

Needs scikit-image and SciPy, imported on first use.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["yolo_lines", "data_yaml"]


def data_yaml(classes: Sequence[Mapping[str, Any]]) -> str:
    """``data.yaml`` for the merged class table (``label`` k -> YOLO class k - 1)."""
    lines = ["# clipseg export: YOLO segmentation labels (labels/NAME.txt: one object a line,",
             "# 'class x1 y1 x2 y2 ...', polygon corners normalised to 0..1).",
             "# The images are not copied: put (or link) them in images/ beside labels/,",
             "# with the same relative names (labels/sub/a.txt <-> images/sub/a.jpg).",
             "path: .", "train: images", "val: images", f"nc: {len(classes)}", "names:"]
    lines += [f"  {int(c['label']) - 1}: {json.dumps(c['name'])}" for c in classes]
    return "\n".join(lines) + "\n"


def yolo_lines(labels: Any, objects: Any = None, *, things: Iterable[int] = (),
               min_area: int = 0) -> list[str]:
    """YOLO-seg lines of one image: ``"class x1 y1 x2 y2 ..."`` per object, in 0..1.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Merged semantic labels (class ``k`` -> YOLO class ``k - 1``).
    objects : (instances, owner), optional
        Objects (``owner[i]`` the label of object ``i``); written one line per object (per
        connected piece of it).
    things : iterable of int
        The labels split into objects: their pixels outside every object (below the split's
        ``min_area``) get no line. Every other label is written one line per connected region.
        The owners of ``objects`` count as things too.
    min_area : int
        Regions and pieces of fewer pixels are left out.

    Each line is the outer boundary of one connected piece (see the module docstring); holes
    are not represented (YOLO polygons have none).
    """
    import numpy as np

    from ..instances import split_instances

    lab = np.asarray(labels)
    height, width = lab.shape
    lines: list[str] = []
    done_classes = {int(v) for v in things}
    if objects is not None:
        inst, owner = objects
        inst = np.asarray(inst)
        owner = np.asarray(owner)
        done_classes |= {int(v) for v in owner[1:] if v}
        lines += _object_lines(inst, owner, height, width, min_area)
    for cls in (int(v) for v in np.unique(lab) if v and int(v) not in done_classes):
        regions = split_instances(lab == cls, min_area=min_area)
        owner = np.full(int(regions.max()) + 1, cls, dtype=np.int32)
        lines += _object_lines(regions, owner, height, width, 0)
    return lines


def _object_lines(objects: Any, owner: Any, height: int, width: int,
                  min_area: int) -> list[str]:
    import numpy as np
    from scipy.ndimage import find_objects
    from skimage.measure import find_contours, label

    out: list[str] = []
    arr = np.asarray(objects)
    if not arr.size or not arr.max():
        return out
    for obj, box in enumerate(find_objects(arr), start=1):
        cls = int(owner[obj]) if obj < len(owner) else 0
        if box is None or not cls:
            continue
        y0, x0 = box[0].start, box[1].start
        crop = arr[box] == obj
        pieces = label(crop, connectivity=2)
        for piece in range(1, int(pieces.max()) + 1):
            part = pieces == piece
            if part.sum() < max(1, min_area):
                continue
            padded = np.pad(part, 1).astype(np.float32)
            contours = find_contours(padded, 0.5)
            if not contours:
                continue
            ring = _corners(max(contours, key=len))
            if len(ring) < 3:
                continue
            ys = np.clip((ring[:, 0] - 1 + y0 + 0.5) / height, 0.0, 1.0)
            xs = np.clip((ring[:, 1] - 1 + x0 + 0.5) / width, 0.0, 1.0)
            coords = " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys))
            out.append(f"{cls - 1} {coords}")
    return out


def _corners(ring: Any) -> Any:
    """The points of a contour where it turns (open: the closing point is not repeated)."""
    import numpy as np

    pts = np.asarray(ring)
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    if len(pts) < 3:
        return pts
    before = pts - np.roll(pts, 1, axis=0)
    after = np.roll(pts, -1, axis=0) - pts
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return pts[np.abs(turn) > 1e-9]
