"""``--instances`` in ``clipseg segment``/``batch``: instance files, their sidecar entry, COCO.

With ``--instances CLASS...`` every result also gets ``NAME.instances.tif`` (uint32 object
ids, 0 = none; :func:`clipseg.instances.instance_map` of the thing classes) and its sidecar the
entry::

    "instances": {"file": "NAME.instances.tif", "classes": ["cell"], "min_area": 0,
                  "watershed": false, "count": 42, "labels_sha256": "..."}

``labels_sha256`` is :func:`clipseg.instances.labels_digest` of the semantic labels the
objects were split from: a reader whose labels no longer match (a person corrected them) knows
the instance file is stale and splits again. The class of object ``i`` is the semantic label
under it (:func:`clipseg.instances.owner_of`). The run writes ``coco_instances.json`` beside
``coco.json``: one annotation per object, ``iscrowd = 0``.

Called by :mod:`clipseg.apps.results` (the instance file of one job) and :mod:`clipseg.apps.run`
(the run's ``coco_instances.json``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..formats import io

if TYPE_CHECKING:
    from ..text import ClassSpec
    from .jobs import Job, Outcome

__all__ = ["InstanceOptions", "INSTANCES_SUFFIX", "instances_path", "write_instances",
           "coco_instances_path", "write_run_coco_instances"]

INSTANCES_SUFFIX = ".instances.tif"


@dataclass(frozen=True)
class InstanceOptions:
    """``--instances``: the "thing" classes split into objects, and how."""

    classes: tuple[str, ...]
    min_area: int = 0
    watershed: bool = False

    def entry(self, file: str, labels: np.ndarray, count: int) -> dict[str, Any]:
        """The sidecar's ``"instances"`` entry for an instance file made from ``labels``."""
        from ..instances import labels_digest

        return {"file": file, "classes": list(self.classes), "min_area": self.min_area,
                "watershed": self.watershed, "count": count,
                "labels_sha256": labels_digest(labels)}


def instances_path(base: Path) -> Path:
    """``NAME.instances.tif`` of output ``NAME``."""
    return base.with_name(base.name + INSTANCES_SUFFIX)


def write_instances(base: Path, labels: Any, classes: Sequence[ClassSpec],
                    options: InstanceOptions) -> dict[str, Any]:
    """Split the thing classes of ``labels`` into objects, write ``NAME.instances.tif``.

    Returns the sidecar's ``"instances"`` entry (written by the caller, with the sidecar).
    """
    import tifffile

    from ..instances import instance_map

    names = [c.name for c in classes]
    things = [names.index(n) + 1 for n in options.classes]
    arr = np.asarray(labels)
    objects, _ = instance_map(arr, things, min_area=options.min_area,
                              watershed=options.watershed)
    path = instances_path(base)
    data = objects.astype(np.uint32, copy=False)
    io.atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib",
                                                       photometric="minisblack"))
    return options.entry(path.name, arr, int(objects.max()) if objects.size else 0)


def coco_instances_path(coco: Path) -> Path:
    """``coco_instances.json`` beside ``coco.json`` (``STEM_instances.json`` for another name)."""
    return coco.with_name(f"{coco.stem}_instances{coco.suffix or '.json'}")


def write_run_coco_instances(jobs: Sequence[Job], outcomes: Sequence[Outcome],
                             classes: Sequence[ClassSpec], instances: InstanceOptions,
                             path: Path) -> Path:
    """COCO instance JSON (one annotation per object) over the run's complete outputs.

    Images whose sidecar has no instance file (kept for a person, made without
    ``--instances``) are split here from their labels with the run's settings.
    """
    import tifffile

    from ..formats.coco import write_coco_instances
    from ..instances import instance_map, labels_digest, owner_of
    from .jobs import class_entries

    ok = {o.name for o in outcomes if o.status in ("done", "skipped")}
    names, synonyms = class_entries(classes)
    entries = io.make_sidecar(names, synonyms=synonyms)["classes"]
    things = [e for e in entries if e["name"] in instances.classes]

    def images():
        for job in jobs:
            if job.name not in ok:
                continue
            labels, meta = io.read_labels(job.base)
            entry = meta.get("instances")
            if isinstance(entry, dict) and (job.base.parent / str(entry.get("file"))).is_file() \
                    and entry.get("labels_sha256") == labels_digest(labels):
                objects = tifffile.imread(job.base.parent / entry["file"])
                yield job.name, objects, owner_of(objects, labels)
            else:
                yield (job.name, *instance_map(labels, [e["label"] for e in things],
                                               min_area=instances.min_area,
                                               watershed=instances.watershed))

    return write_coco_instances(path, things, images())
