"""Start-up cost of the command line: `clipseg --help` against importing what a run needs.

Prints the median wall time of fresh processes for:
  - `python -c pass`                      (the interpreter alone),
  - `clipseg --help`, `clipseg segment --help`, an option error (`--tau -1`),
  - `import torch, open_clip` (what 0.1 paid before parsing anything; the baseline),
and the ratios of the CLI cases to the baseline, measured in this one run.

Run: .venv/bin/python benchmarks/bench_startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _measure(cmd: list[str], repeat: int) -> float:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    cli = [py, "-m", "clipseg"]
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "clipseg --help": cli + ["--help"],
        "clipseg segment --help": cli + ["segment", "--help"],
        "option error (--tau -1)": cli + ["segment", "x.png", "--classes", "a", "-o", "/tmp/x",
                                          "--tau", "-1"],
    }
    results = {name: _measure(cmd, args.repeat) for name, cmd in cases.items()}
    base_wall = _measure([py, "-c", "import torch, open_clip"], args.repeat)
    print(f"baseline: import torch, open_clip  {base_wall:.2f} s (median of {args.repeat})")
    for name, wall in results.items():
        print(f"{name:28s} {wall:6.2f} s   ratio to baseline {wall / base_wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
