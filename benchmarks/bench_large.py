"""Peak memory and time of tiled large-image segmentation: 8192x8192 vs 2048x2048, 20 classes.

Each size runs ``clipseg segment --short-side none`` in a fresh child process (so peak RSS is
that run's own), on an uncompressed RGB TIFF read lazily (memory-mapped), with the labels
streamed to a memory-mapped TIFF. The model is the tiny random-weights test architecture
(4 blocks, width 64, patch 8) saved as a .safetensors checkpoint, with 64-pixel windows every
48 pixels, so the run finishes in minutes on 2 CPU cores; what is measured is the CLI's tiling
and streaming, whose cost per window does not depend on the model.

Expected: time ratio close to the area ratio (16), peak-RSS ratio close to 1. A run on a
64x64 image measures the fixed cost of a run (imports, model load, encoding 20 x 80 prompts),
and the time ratios are also printed with that cost taken off both sides. CPU time (user +
system) is printed next to wall time because it is far less sensitive to other processes
competing for the cores.

    .venv/bin/python benchmarks/bench_large.py [--large 8192] [--small 2048] [--tile 1024]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ", ".join(["road", "building", "tree", "water", "grass", "car", "person", "sky",
                     "sand", "rock", "snow", "field", "roof", "bridge", "boat", "fence",
                     "wall", "train", "bicycle", "flower"])


def make_model(folder: Path) -> tuple[Path, Path, str]:
    """Tiny random CLIP: config JSON and .safetensors weights."""
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import save_file

    from tests.tiny_models import TINY_CONFIG, TINY_NAME, make_tiny_clip

    cfg = folder / f"{TINY_NAME}.json"
    cfg.write_text(json.dumps(TINY_CONFIG))
    weights = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in make_tiny_clip().state_dict().items()},
              str(weights))
    return cfg, weights, TINY_NAME


def make_image(path: Path, size: int) -> None:
    """Uncompressed RGB TIFF of blocks and noise, written in strips (bounded memory)."""
    import numpy as np
    import tifffile

    out = tifffile.memmap(path, shape=(size, size, 3), dtype=np.uint8, photometric="rgb")
    rng = np.random.default_rng(0)
    for y0 in range(0, size, 512):
        y1 = min(size, y0 + 512)
        block = rng.integers(0, 60, (y1 - y0, size, 3), dtype=np.uint8)
        yy = np.arange(y0, y1)[:, None]
        xx = np.arange(size)[None, :]
        block[((yy // 700 + xx // 900) % 3) == 0] += np.array([150, 20, 20], np.uint8)
        block[((yy // 500 + xx // 300) % 4) == 1] += np.array([10, 140, 40], np.uint8)
        out[y0:y1] = block
    out.flush()
    del out


def _rss_anon_kib() -> int:
    """Anonymous resident memory (heap, tensors) of this process, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def child(argv: list[str]) -> None:
    """Run the CLI here; print wall time, peak RSS and sampled peak anonymous RSS as JSON.

    Peak RSS (``ru_maxrss``) also counts file pages of the memory-mapped input and output
    TIFFs that are resident (reclaimable page cache); peak anonymous RSS is the memory the
    run itself allocates, sampled every 20 ms.
    """
    import threading

    import torch

    torch.set_num_threads(int(argv.pop(0)))
    from clipseg.apps.cli import main

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss_anon_kib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_kib = usage.ru_maxrss
    print(json.dumps({"code": code, "seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                      "peak_mib": peak_kib / 1024,
                      "anon_mib": max(peak[0], _rss_anon_kib()) / 1024}))


def run_size(size: int, folder: Path, model: tuple[Path, Path, str], tile: int,
             threads: int) -> dict:
    image = folder / f"img{size}.tif"
    make_image(image, size)
    cfg, weights, name = model
    argv = [str(threads), "segment", str(image), "--classes", CLASSES, "-o",
            str(folder / f"out{size}"), "--model", name, "--checkpoint", str(weights),
            "--model-config", str(cfg), "--device", "cpu", "--short-side", "0",
            "--crop", "64", "--stride", "48", "--batch-size", "64", "--tile-size", str(tile),
            "--no-coco", "--quiet"]
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["size"] = size
    image.unlink()
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=2048)
    parser.add_argument("--large", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipseg-bench-") as tmp:
        folder = Path(tmp)
        model = make_model(folder)
        rows = [run_size(s, folder, model, args.tile, args.threads)
                for s in (64, args.small, args.large)]
    fixed, small, large = rows
    for r in rows:
        print(f"{r['size']:>6d}^2 px, 20 classes: {r['seconds']:8.1f} s wall, "
              f"{r['cpu']:8.1f} s CPU, "
              f"peak RSS {r['peak_mib']:7.0f} MiB, peak anonymous RSS {r['anon_mib']:7.0f} MiB "
              f"(exit {r['code']})")
    area = (args.large / args.small) ** 2
    marginal = (large["seconds"] - fixed["seconds"]) / (small["seconds"] - fixed["seconds"])
    cpu_marginal = (large["cpu"] - fixed["cpu"]) / (small["cpu"] - fixed["cpu"])
    print(f"area ratio {area:.1f}; wall-time ratio {large['seconds'] / small['seconds']:.2f} "
          f"({marginal:.2f} without the fixed cost of a run); CPU-time ratio "
          f"{large['cpu'] / small['cpu']:.2f} ({cpu_marginal:.2f} without the fixed cost); "
          f"peak-RSS ratio {large['peak_mib'] / small['peak_mib']:.2f} "
          f"(anonymous {large['anon_mib'] / small['anon_mib']:.2f})")


if __name__ == "__main__":
    main()
