"""Images per second: serial ``clipseg batch`` vs the same run on a 2-worker LocalCluster.

Generates N RGB images, runs the batch serially in this process, then twice on a
:class:`distributed.LocalCluster` of 2 single-threaded worker processes through
``--dask-scheduler``: a *cold* run (each worker imports torch and loads the model on its first
image, as a real run does) and a *warm* run into another folder (steady-state throughput). The
model is the tiny random-weights test architecture saved as a .safetensors checkpoint and
registered on the workers with ``--model-config``. Cluster start-up is timed separately.

Use ``--threads 1`` for the serial run on a shared machine: torch's OpenMP threads spin-wait
and slow down badly when other processes hold the cores.

    .venv/bin/python benchmarks/bench_dask.py [--images 32] [--size 384] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_large import make_model  # noqa: E402

CLASSES = "road, building, tree, water, grass, car, person, sky"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, serial run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from distributed import LocalCluster
    from PIL import Image

    from clipseg.apps.cli import main as clipseg

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="clipseg-bench-dask-") as tmp:
        folder = Path(tmp)
        cfg, weights, name = make_model(folder)
        rng = np.random.default_rng(0)
        (folder / "in").mkdir()
        for i in range(args.images):
            img = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / "in" / f"{i:03d}.png")
        common = ["batch", str(folder / "in"), "--classes", CLASSES, "--model", name,
                  "--checkpoint", str(weights), "--model-config", str(cfg), "--device", "cpu",
                  "--short-side", "0", "--no-coco", "--quiet"]

        start = time.perf_counter()
        code = clipseg(common + ["-o", str(folder / "serial")])
        serial = time.perf_counter() - start

        start = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster:
            startup = time.perf_counter() - start
            start = time.perf_counter()
            dcode = clipseg(common + ["-o", str(folder / "dask"), "--dask-scheduler",
                                      cluster.scheduler_address])
            dask = time.perf_counter() - start
            start = time.perf_counter()
            clipseg(common + ["-o", str(folder / "dask-warm"), "--dask-scheduler",
                              cluster.scheduler_address])
            warm = time.perf_counter() - start
        same = all((folder / "serial" / p.name).read_bytes() == p.read_bytes()
                   for p in (folder / "dask").glob("*.png"))
    n = args.images
    print(f"{n} images {args.size}x{args.size} (native resolution), 8 classes, tiny model, "
          f"exits {code}/{dcode}")
    print(f"serial ({args.threads} torch threads): {serial:6.1f} s = {n / serial:6.2f} img/s")
    print(f"dask, {args.workers} workers x 1 thread, cold: {dask:6.1f} s = {n / dask:6.2f} img/s "
          f"(+ {startup:.1f} s cluster start-up)")
    print(f"dask, {args.workers} workers x 1 thread, warm: {warm:6.1f} s = {n / warm:6.2f} img/s")
    print(f"speed-up cold {serial / dask:.2f}x, warm {serial / warm:.2f}x; label images "
          f"identical to serial: {same}")


if __name__ == "__main__":
    main()
