"""Images per second: serial ``clipseg batch`` vs the same run on a 2-worker LocalCluster.

Generates N RGB images, runs the batch serially in this process, then twice on a
:class:`distributed.LocalCluster` of 2 single-threaded worker processes through
``--dask-scheduler``: a *cold* run (each worker imports torch and loads the model on its first
image, as a real run does) and a *warm* run into another folder (steady-state throughput). The
model is ``--arch``: ``tiny`` (default) is the random-weights test architecture registered on the
workers with ``--model-config``; an open_clip architecture name (``ViT-B-16``) builds that model
with random weights. Either is saved as a .safetensors checkpoint that every run loads. Cluster
start-up is timed separately.

Text embeddings come from an on-disk cache (``--text-cache``) filled by a one-image serial run
before the timed runs, so every run reads them instead of encoding 8 x 80 prompts; that run also
gives the serial run's fixed cost (start-up, model load), from which the number of images where
the cold 2-worker run overtakes the serial one (break-even) is estimated.

Use ``--threads 1`` for the serial run on a shared machine: torch's OpenMP threads spin-wait
and slow down badly when other processes hold the cores.

    .venv/bin/python benchmarks/bench_dask.py [--arch tiny|ViT-B-16] [--images 32] [--size 384]
                                              [--threads 1]
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

from bench_large import make_model

CLASSES = "road, building, tree, water, grass, car, person, sky"


def make_arch(folder: Path, arch: str) -> Path:
    """An open_clip architecture with random weights (seed 0), saved as .safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, serial run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arch", default="tiny",
                        help="'tiny' (test architecture) or an open_clip architecture name "
                             "built with random weights (ViT-B-16)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from distributed import LocalCluster
    from PIL import Image

    from clipseg.apps.cli import main as clipseg

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="clipseg-bench-dask-") as tmp:
        folder = Path(tmp)
        if args.arch == "tiny":
            cfg, weights, name = make_model(folder)
            extra = ["--model-config", str(cfg)]
        else:
            weights, name = make_arch(folder, args.arch), args.arch
            extra = []
        rng = np.random.default_rng(0)
        (folder / "in").mkdir()
        for i in range(args.images):
            img = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / "in" / f"{i:03d}.png")
        common = ["--classes", CLASSES, "--model", name, "--checkpoint", str(weights),
                  *extra, "--device", "cpu", "--short-side", "0", "--no-coco", "--quiet",
                  "--text-cache", str(folder / "text")]
        (folder / "one").mkdir()
        (folder / "one" / "000.png").write_bytes((folder / "in" / "000.png").read_bytes())
        start = time.perf_counter()
        clipseg(["batch", str(folder / "one"), *common, "-o", str(folder / "prefill")])
        prefill = time.perf_counter() - start  # fills the text cache (encodes the prompts)
        start = time.perf_counter()
        clipseg(["batch", str(folder / "one"), *common, "-o", str(folder / "single")])
        single = time.perf_counter() - start   # one image, text from the cache
        common = ["batch", str(folder / "in"), *common]

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
    per_serial = (serial - single) / max(1, n - 1)      # per image, serial
    fixed_serial = single - per_serial                   # start-up + model load
    per_dask = warm / n                                  # per image, 2 workers, steady
    fixed_dask = startup + dask - n * per_dask           # cluster + worker imports + loads
    print(f"{n} images {args.size}x{args.size} (native resolution), 8 classes x 80 prompts "
          f"(text from the disk cache), model {args.arch} (random weights), exits {code}/{dcode}")
    print(f"text encoding, once (prefill run minus one cached run): {prefill - single:6.1f} s")
    print(f"serial ({args.threads} torch threads): {serial:6.1f} s = {n / serial:6.2f} img/s")
    print(f"dask, {args.workers} workers x 1 thread, cold: {dask:6.1f} s = {n / dask:6.2f} img/s "
          f"(+ {startup:.1f} s cluster start-up)")
    print(f"dask, {args.workers} workers x 1 thread, warm: {warm:6.1f} s = {n / warm:6.2f} img/s")
    print(f"speed-up cold {serial / dask:.2f}x, warm {serial / warm:.2f}x; label images "
          f"identical to serial: {same}")
    print(f"per image: serial {per_serial:.2f} s, dask steady {per_dask:.2f} s "
          f"(ratio {per_serial / per_dask:.2f}x); fixed cost: serial {fixed_serial:.1f} s, "
          f"dask cold {fixed_dask:.1f} s incl. start-up")
    if per_serial > per_dask:
        print(f"break-even (cold dask incl. cluster start-up = serial): about "
              f"{max(0.0, (fixed_dask - fixed_serial) / (per_serial - per_dask)):.1f} images")
    else:
        print("break-even: none (the cluster is not faster per image here)")


if __name__ == "__main__":
    main()
