"""Instances and ``clipseg export``: what they cost against the plain step they build on, CPU.

Two parts, each timed against a baseline in the same process (median of ``--repeat``):

1. **Splitting** (:mod:`clipseg.instances`) of a synthetic ``--size`` x ``--size`` label map
   of three classes, two of them "things" made of ``--objects`` discs (radius 6 to 20, placed
   at random, so some touch), against ``scipy.ndimage.label`` of the same binary mask (8-connected,
   the cheapest connected-components pass). Also ``skimage.measure.label`` (which
   ``split_instances`` calls), ``split_instances`` (components + raster-order ids), with
   ``watershed=True``, and ``instance_map`` over both thing classes.
2. **Export** of a drafts folder of ``--images`` reviewed drafts (``--draft-size`` square, the
   same kind of label maps, written with :func:`clipseg.formats.io.write_labels` and a
   "reviewed" state, half of them with an instance file as ``clipseg batch --instances``
   writes it), against reading every draft's label file and sidecar alone
   (:func:`clipseg.formats.io.read_labels`), the least any export must do. Each format is
   timed on its own (with ``--instances`` for the images without an instance file), then all
   three together. Per image and as a ratio to the baseline; reading plus one atomic PNG per
   image (temp file, fsync, rename: what every output file costs) is printed as a write floor.

It prints figures and asserts nothing. Run from the repository root::

    .venv/bin/python benchmarks/bench_instances.py [--size 2048] [--images 40] [--repeat 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CLASSES = ["cell", "nucleus", "background"]


def synthetic_labels(size: int, objects: int, seed: int) -> np.ndarray:
    """Labels 1 (cell) and 2 (nucleus) as random discs on 3 (background)."""
    rng = np.random.default_rng(seed)
    lab = np.full((size, size), 3, np.uint8)
    yy, xx = np.ogrid[:size, :size]
    for k in range(objects):
        r = int(rng.integers(6, 21))
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        box = (slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
        disc = (yy[box[0]] - cy) ** 2 + (xx[:, box[1]] - cx) ** 2 <= r * r
        lab[box][disc] = 1 + k % 2
    return lab


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls (after one warm-up) and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_split(args: argparse.Namespace) -> None:
    from scipy import ndimage
    from skimage.measure import label

    from clipseg.instances import instance_map, split_instances

    lab = synthetic_labels(args.size, args.objects, seed=0)
    mask = lab == 1
    eight = np.ones((3, 3), bool)
    base, (_, n_base) = timed(lambda: ndimage.label(mask, structure=eight), args.repeat)
    rows = [("scipy.ndimage.label (8-connected), baseline", base, n_base)]
    t, out = timed(lambda: label(mask, connectivity=2), args.repeat)
    rows.append(("skimage.measure.label (connectivity 2)", t, int(out.max())))
    t, out = timed(lambda: split_instances(mask), args.repeat)
    rows.append(("split_instances", t, int(out.max())))
    t, out = timed(lambda: split_instances(mask, min_area=200), args.repeat)
    rows.append(("split_instances, min_area 200", t, int(out.max())))
    t, out = timed(lambda: split_instances(mask, watershed=True), args.repeat)
    rows.append(("split_instances, watershed", t, int(out.max())))
    t, (out, _) = timed(lambda: instance_map(lab, [1, 2]), args.repeat)
    rows.append(("instance_map, 2 thing classes", t, int(out.max())))
    t, (out, _) = timed(lambda: instance_map(lab, [1, 2], watershed=True), args.repeat)
    rows.append(("instance_map, 2 thing classes, watershed", t, int(out.max())))
    print(f"1. splitting a {args.size} x {args.size} label map ({args.objects} discs, "
          f"{100 * mask.mean():.1f} % class 1), median of {args.repeat}")
    print(f"   {'':44s} {'time':>10s} {'/ baseline':>10s} {'objects':>8s}")
    for name, t, n in rows:
        print(f"   {name:44s} {t * 1000:8.1f} ms {t / base:10.2f} {n:8d}")


def make_drafts(folder: Path, n: int, size: int) -> None:
    import tifffile

    from clipseg.apps.batch_instances import InstanceOptions, instances_path
    from clipseg.formats import io
    from clipseg.formats.review import REVIEWED, with_review_state
    from clipseg.instances import instance_map

    options = InstanceOptions(classes=("cell", "nucleus"))
    for i in range(n):
        lab = synthetic_labels(size, objects=max(4, size * size // 4000), seed=100 + i)
        base = folder / f"im{i:04d}"
        extra = {"review": with_review_state({}, REVIEWED)["review"]}
        if i % 2 == 0:  # as `clipseg batch --instances cell nucleus` leaves it
            objects, _ = instance_map(lab, [1, 2])
            path = instances_path(base)
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, objects.astype(np.uint32), compression="zlib")
            extra["instances"] = options.entry(path.name, lab, int(objects.max()))
        io.write_labels(base, lab, CLASSES, image_info={"name": f"im{i:04d}.png"}, extra=extra)


def bench_export(args: argparse.Namespace) -> None:
    from clipseg.apps.batch_instances import InstanceOptions
    from clipseg.apps.export import export_folder
    from clipseg.formats import io

    root = Path(tempfile.mkdtemp(prefix="clipseg-bench-export-"))
    try:
        drafts = root / "drafts"
        make_drafts(drafts, args.images, args.draft_size)
        bases = sorted(p.with_name(p.name[: -len(io.SIDECAR_SUFFIX)])
                       for p in drafts.glob("*" + io.SIDECAR_SUFFIX))

        def read_all() -> int:
            return sum(int(io.read_labels(b)[0].size > 0) for b in bases)

        base, _ = timed(read_all, args.repeat)
        scratch = root / "scratch"

        def write_all() -> int:  # the least a per-image output costs: one atomic PNG each
            from PIL import Image

            from clipseg.atomic import atomic_write

            for b in bases:
                labels = io.read_labels(b)[0]
                atomic_write(scratch / (b.name + ".png"),
                             lambda tmp, a=labels: Image.fromarray(a).save(tmp, format="PNG"))
            return len(bases)

        floor, _ = timed(write_all, args.repeat)
        options = InstanceOptions(classes=("cell", "nucleus"))
        runs = [("coco",), ("masks",), ("yolo",), ("coco", "masks", "yolo")]
        rows = []
        for formats in runs:
            out = root / "out"

            def run(formats=formats, out=out) -> object:
                return export_folder(drafts, out, formats=formats, overwrite=True,
                                     instances=options)

            t, report = timed(run, args.repeat)
            rows.append((" + ".join(formats), t, report.objects))
            shutil.rmtree(out)
        n = args.images
        print(f"2. export of {n} reviewed drafts of {args.draft_size} x {args.draft_size} "
              f"(half with an instance file), median of {args.repeat}")
        print(f"   {'':44s} {'per image':>10s} {'/ baseline':>10s} {'objects':>8s}")
        print(f"   {'read_labels of every draft, baseline':44s} {base / n * 1000:7.1f} ms "
              f"{1.0:10.2f}")
        print(f"   {'read + one atomic PNG each (a write floor)':44s} {floor / n * 1000:7.1f} ms "
              f"{floor / base:10.2f}")
        for name, t, objects in rows:
            print(f"   {'export --format ' + name:44s} {t / n * 1000:7.1f} ms "
                  f"{t / base:10.2f} {objects:8d}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the split label map")
    parser.add_argument("--objects", type=int, default=2000, help="discs in the split map")
    parser.add_argument("--images", type=int, default=40, help="drafts in the exported folder")
    parser.add_argument("--draft-size", type=int, default=512, help="side of each draft")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--only", choices=("split", "export"), default=None)
    args = parser.parse_args()
    if args.only in (None, "split"):
        bench_split(args)
    if args.only in (None, "export"):
        bench_export(args)


if __name__ == "__main__":
    main()
