"""Memory benchmark: :func:`clipseg.memory.estimate_memory` against what a run really uses, CPU.

For every case of a grid (image size, ``short_side``, ``crop`` / ``stride`` including crop 0,
``batch_size``, the number of classes K, PAMR on or off with its ``pamr_tile``) a fresh
subprocess builds open_clip ``ViT-B-16`` with random weights (the real model's activations;
nothing is downloaded), runs :meth:`clipseg.pipeline.Segmenter.run` once on a small image with
the same options and classes (warm-up: lazy initialisation, the class text embeddings cached,
torch's thread pool started), returns freed heap to the system (``malloc_trim``), then reads
its resident set size: that is the **baseline**. Only then is the case's image made and
segmented. The figure is the process's peak RSS above the baseline (``VmHWM`` of
``/proc/self/status``, reset by writing ``5`` to ``/proc/self/clear_refs``; where that is not
permitted a thread samples ``VmRSS`` every millisecond), read per phase of the run from its
progress events (windows; stitching and upsampling; PAMR; labels) and over the whole run.

Why RSS and not tracemalloc: tracemalloc does not see torch's allocations. On CPU torch
allocates through the C library's malloc (no caching allocator of its own), but glibc's malloc
keeps freed blocks below its mmap threshold (dynamic, up to 32 MiB) in the heap, so RSS can
stay above the live bytes after a free and a later allocation may reuse them; the peak RSS is
what a machine must provide, and is what the estimate must bound. ``--mmap-threshold`` fixes
glibc's threshold in the subprocesses (``MALLOC_MMAP_THRESHOLD_``) to compare.

Printed per case: the estimate (:meth:`Segmenter.check_memory`, the same call ``run`` makes
before any work, with ``max_memory 0`` so nothing is refused), the measured peak above the
baseline and the ratio measured / estimate, with the estimated and measured peak of each
phase; then min / median / max of the ratios. The estimate should be a safe upper bound that
is not absurd: ratios at most 1 and, for the large images where the check matters, not far
below it. It prints figures and asserts nothing. Run from the repository root::

    .venv/bin/python benchmarks/bench_memory.py [--quick] [--threads 2] [--only NAME]
        [--mmap-threshold BYTES] [--list]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MIB = 1 << 20
ARCH = "ViT-B-16"
#: Options of the base case (ViT-B-16/openai's registry defaults), and K.
BASE = {"short_side": 448, "crop": 224, "stride": 112, "batch_size": 4, "pamr": False,
        "pamr_tile": 512}


def _case(name: str, size: tuple[int, int], classes: int = 8, **options) -> dict:
    return {"name": name, "size": list(size), "classes": classes, "options": {**BASE, **options}}


def cases(quick: bool) -> list[dict]:
    """The grid: sizes, then one option changed at a time on a large image."""
    if quick:
        return [_case("256x256", (256, 256)),
                _case("512x512 K32", (512, 512), 32),
                _case("512x512 crop0", (512, 512), crop=0),
                _case("512x512 pamr", (512, 512), pamr=True, pamr_tile=256)]
    grid = [_case(f"{h}x{w}", (h, w)) for h, w in ((256, 256), (512, 512), (1024, 768),
                                                   (2048, 1536))]
    big = (2048, 1536)
    grid += [
        _case("2048x1536 K2", big, 2),
        _case("2048x1536 K32", big, 32),
        _case("2048x1536 bs1", big, batch_size=1),
        _case("2048x1536 stride224", big, stride=224),
        _case("2048x1536 short896", big, short_side=896),
        _case("2048x1536 crop0", big, crop=0),
        _case("2048x1536 crop0 short672", big, crop=0, short_side=672),
        _case("1024x768 crop0 short0", (1024, 768), crop=0, short_side=0),
        _case("1024x768 crop0 short0 sclip", (1024, 768), crop=0, short_side=0,
              method="sclip"),
        _case("1024x768 crop0 short0 kk_middle", (1024, 768), crop=0, short_side=0,
              method="kk_middle"),
        _case("1024x768 short0", (1024, 768), short_side=0),
        _case("1024x768 short0 K32", (1024, 768), 32, short_side=0),
        _case("2048x1536 short0 bs1", big, 2, short_side=0, batch_size=1, stride=224),
        _case("1024x768 pamr", (1024, 768), pamr=True),
        _case("2048x1536 pamr", big, pamr=True),
        _case("2048x1536 pamr tile256", big, pamr=True, pamr_tile=256),
        _case("2048x1536 pamr K32", big, 32, pamr=True),
        _case("2048x1536 pamr K32 tile256", big, 32, pamr=True, pamr_tile=256),
    ]
    return grid


# --------------------------------------------------------------------------------------------
# the subprocess: one case
# --------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMeter:
    """Peak RSS since the last :meth:`reset`, in bytes (VmHWM, else a sampling thread)."""

    def __init__(self) -> None:
        self.method = "VmHWM reset by clear_refs"
        try:
            self._clear()
            # the reset must bring VmHWM down to VmRSS; check it once with a freed block
            block = bytearray(256 * MIB)
            del block
            self._clear()
            if _status_kib("VmHWM") > _status_kib("VmRSS") + 64 * 1024:
                raise OSError("VmHWM not reset")
        except OSError:
            self.method = "VmRSS sampled every 1 ms"
            self._peak = 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    @staticmethod
    def _clear() -> None:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kib("VmRSS"))
            time.sleep(0.001)

    def reset(self) -> None:
        if self.method.startswith("VmHWM"):
            self._clear()
        else:
            self._peak = _status_kib("VmRSS")

    def peak(self) -> int:
        if self.method.startswith("VmHWM"):
            return _status_kib("VmHWM") * 1024
        return max(self._peak, _status_kib("VmRSS")) * 1024


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_case(case: dict, threads: int, trim: bool = False) -> dict:
    import numpy as np
    import open_clip
    import torch

    from clipseg.config import SegmentConfig
    from clipseg.models import wrap_model
    from clipseg.pipeline import Segmenter

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch = case.get("arch", ARCH)
    if arch == "tiny":  # the test suite's architecture (tests/tiny_models.py)
        from tests.tiny_models import TINY_NAME, make_tiny_clip

        arch, module = TINY_NAME, make_tiny_clip()
    else:
        module = open_clip.create_model(arch, pretrained=None).eval()
    loaded = wrap_model(module, name=arch)
    config = SegmentConfig().replace(model=arch, device="cpu", precision="fp32",
                                     text_cache="none", max_memory=0, **case["options"])
    seg = Segmenter(config, model=loaded, templates=("a photo of a {}.",))
    classes = [f"class {i}" for i in range(case["classes"])]
    rng = np.random.default_rng(0)
    seg.segment(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), classes)  # warm-up
    height, width = case["size"]
    estimate = seg.check_memory((height, width), classes)
    meter = PeakMeter()
    seg.clear_cache()
    _trim()
    baseline = _status_kib("VmRSS") * 1024
    meter.reset()
    phases: dict[str, int] = {}
    phase, start = "windows", time.perf_counter()
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    run = seg.run(image, classes)
    try:
        while True:
            step = next(run)
            boundary = None
            if step.stage == "windows" and step.done == step.total:
                boundary = "stitch"
            elif step.stage == "refine" and step.done == 0:
                boundary = "pamr"
            elif step.stage == "labels" and step.done == 0:
                boundary = "labels"
            if boundary and boundary != phase:
                phases[phase] = max(phases.get(phase, 0), meter.peak() - baseline)
                if trim:
                    _trim()
                meter.reset()
                phase = boundary
    except StopIteration as stop:
        result = stop.value
    phases[phase] = max(phases.get(phase, 0), meter.peak() - baseline)
    seconds = time.perf_counter() - start
    assert result.probs.shape == (len(classes), height, width)
    return {"estimate": estimate.peak, "estimate_phases": estimate.phases,
            "estimate_parts": estimate.parts, "working": list(estimate.working),
            "measured": max(phases.values()), "phases": phases, "baseline": baseline,
            "method": meter.method, "seconds": seconds}


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------
def measure(case: dict, threads: int = 2, env: dict | None = None, *,
            trim: bool = False) -> dict:
    """:func:`run_case` in a fresh Python (``env``: its environment, with ``PYTHONPATH``
    reaching ``src`` and the repository root); raises RuntimeError when it fails."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case),
                           "--threads", str(threads)] + (["--trim"] if trim else []),
                          env=env, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(line[len("RESULT "):])


def _mib(n: float) -> str:
    return f"{n / MIB:8.0f}"


def _describe(case: dict) -> str:
    o = case["options"]
    text = f"short {o['short_side']} crop {o['crop']}"
    if o["crop"]:
        text += f"/{o['stride']}"
    text += f" bs {o['batch_size']} K {case['classes']}"
    if o.get("method", "clipseg") != "clipseg":
        text += f" {o['method']}"
    if o["pamr"]:
        text += f" pamr tile {o['pamr_tile']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four small cases (about 1 min)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per case")
    parser.add_argument("--only", default=None, help="cases whose name contains this")
    parser.add_argument("--mmap-threshold", type=int, default=None,
                        help="fix glibc's MALLOC_MMAP_THRESHOLD_ (bytes) in the subprocesses")
    parser.add_argument("--trim", action="store_true",
                        help="diagnostic: return freed heap to the system (malloc_trim) at "
                             "each phase boundary, so a phase's figure is less its "
                             "predecessors' leftovers")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(run_case(json.loads(args.child), args.threads,
                                                  args.trim)))
        return
    grid = [c for c in cases(args.quick) if args.only is None or args.only in c["name"]]
    if args.list:
        for case in grid:
            print(f"{case['name']:<28} {_describe(case)}")
        return
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root),
                                         env.get("PYTHONPATH", "")])
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    print(f"{ARCH} random weights, CPU fp32, {args.threads} threads, one subprocess per case; "
          f"MiB above the RSS after model load and warm-up"
          + (f"; MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else ""))
    print(f"{'case':<28} {'options':<34} {'working':>9} {'estimate':>8} {'measured':>8} "
          f"{'ratio':>6}  phases estimate/measured (MiB)")
    rows = []
    for case in grid:
        try:
            res = measure(case, args.threads, env, trim=args.trim)
        except RuntimeError as exc:
            print(f"{case['name']:<28} {exc}")
            continue
        ratio = res["measured"] / res["estimate"]
        est_ph = res["estimate_phases"]
        shown = {"windows": est_ph["windows"],
                 "stitch": max(est_ph["stitch"], est_ph["upsample"]),
                 "pamr": est_ph.get("pamr"), "labels": est_ph["labels"]}
        phases = "  ".join(f"{name} {shown[name] / MIB:.0f}/{value / MIB:.0f}"
                           for name, value in res["phases"].items() if shown.get(name))
        working = "x".join(map(str, res["working"]))
        print(f"{case['name']:<28} {_describe(case):<34} {working:>9} {_mib(res['estimate'])} "
              f"{_mib(res['measured'])} {ratio:6.2f}  {phases}   ({res['seconds']:.0f} s)",
              flush=True)
        rows.append({**case, **res, "ratio": ratio})
        if args.json:  # after every case, so a long run that is stopped keeps what it did
            Path(args.json).write_text(json.dumps(rows, indent=1))
    if rows:
        ratios = [r["ratio"] for r in rows]
        print(f"\nratio measured / estimate over {len(rows)} cases: min {min(ratios):.2f}, "
              f"median {statistics.median(ratios):.2f}, max {max(ratios):.2f}   "
              f"(peak meter: {rows[0]['method']})")
        large = [r["ratio"] for r in rows if r["estimate"] >= 256 * MIB]
        if large:
            print(f"estimates >= 256 MiB ({len(large)} cases): min {min(large):.2f}, "
                  f"median {statistics.median(large):.2f}, max {max(large):.2f}")


if __name__ == "__main__":
    main()
