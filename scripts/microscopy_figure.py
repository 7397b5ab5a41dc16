"""Regenerate the figure of docs/microscopy.md (no download, CPU, a few seconds)::

    python scripts/microscopy_figure.py            # writes docs/images/microscopy-draft.png
    python scripts/microscopy_figure.py --keep DIR # also keeps the OME-TIFF and the outputs

It writes a synthetic scene (``clipseg.apps.synthetic``, held-out seed) as a three-channel,
16-bit OME-TIFF the way a fluorescence microscope stores one: one plane per channel, named
``DAPI``, ``EGFP`` and ``mCherry`` (the scene's blue, green and red, at 12-bit intensities
over a camera offset, with shot-like noise), 0.325 µm pixels. It runs the real command line,
``clipseg segment --channels dyes`` with the bundled toy model ``clipseg-demo-tiny``, and
draws three panels in micrometres: the three channels as stored, the composite the dye preset
made (DAPI blue, EGFP green, mCherry red), and the label TIFF over it, placed by the pixel
size read back from *the label file's own* OME-XML. The toy model knows coloured shapes and
three textures only, so the "cells" are the scene's shapes: the figure shows the channel
preset and the pixel-size round trip, not accuracy on microscopy. The seed (24) was picked
among the first 40 held-out scenes as the one with a shape in each colour that the toy
segments best (mIoU 0.59 against the scene's truth; the median of those candidates is about
0.4; ``--search`` prints them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "microscopy-draft.png"
PIXEL_UM = 0.325                  # a 20x objective on a 6.5 µm camera pixel
OFFSET, FULL = 100, 3800          # camera offset and the brightest signal (12-bit camera)
CHANNELS = ("DAPI", "EGFP", "mCherry")   # stored in this order: blue, green, red of the scene
SEED = 24


def write_cells(path: Path, seed: int = SEED) -> tuple[np.ndarray, object]:
    """The scene as a (C, Y, X) uint16 OME-TIFF; returns the planes and the scene."""
    import tifffile

    from clipseg.apps.demo import HELD_OUT_SEED
    from clipseg.apps.synthetic import make_scene

    scene = make_scene(HELD_OUT_SEED + seed, (160, 224), n_shapes=(4, 6), two_backgrounds=0.0)
    rng = np.random.default_rng(seed)
    signal = scene.image[..., ::-1].transpose(2, 0, 1) * FULL          # blue, green, red
    planes = OFFSET + rng.poisson(np.clip(signal, 0, None)).astype(np.float64)
    planes = np.clip(planes, 0, 4095).astype(np.uint16)
    tifffile.imwrite(path, planes, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "PhysicalSizeX": PIXEL_UM,
                               "PhysicalSizeXUnit": "µm", "PhysicalSizeY": PIXEL_UM,
                               "PhysicalSizeYUnit": "µm", "Channel": {"Name": list(CHANNELS)}})
    return planes, scene


def _segment(folder: Path, names: list[str]) -> int:
    from clipseg.apps.cli import main
    from clipseg.models.bundled import BUNDLED_ARCH

    return main(["segment", str(folder / "cells.ome.tif"), "--classes", ", ".join(names),
                 "-o", str(folder / "out"), "--model", BUNDLED_ARCH, "--short-side", "0",
                 "--pamr", "--pamr-dilations", "1", "2", "--channels", "dyes",
                 "--device", "cpu", "--quiet"])


def _names(scene) -> list[str]:
    # the query order gives each class its palette colour (red, green, blue, yellow, ...)
    order = ["red", "green", "blue", "yellow"]
    shapes = sorted(set(scene.shapes), key=lambda n: (order.index(n.split()[0]), n))
    return shapes + list(scene.backgrounds)


def render(folder: Path, target: Path, seed: int = SEED) -> Path:
    """Write the OME-TIFF in ``folder``, segment it, and draw ``target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from clipseg.formats import io
    from clipseg.formats.ome import read_spatial

    planes, scene = write_cells(folder / "cells.ome.tif", seed)
    names = _names(scene)
    if _segment(folder, names) != 0:
        raise SystemExit("clipseg segment failed")
    labels, meta = io.read_labels(folder / "out" / "cells.ome")
    back = read_spatial(folder / "out" / "cells.ome.tif")       # the label file's own OME-XML
    assert back is not None and abs(back.x - PIXEL_UM) < 1e-9, "the label TIFF lost its scale"
    h, w = labels.shape
    extent_in = (0, w * PIXEL_UM, h * PIXEL_UM, 0)
    extent_out = (0, w * back.x, h * back.y, 0)
    low, high = float(planes.min()), float(planes.max())
    composite = np.zeros((h, w, 3))
    for slot, entry in zip(range(3), (meta["channels"][s] for s in "rgb")):
        if entry is not None:
            composite[..., slot] = (planes[entry["index"]] - low) / (high - low)
    rgba = np.zeros((h, w, 4))
    for entry in meta["classes"]:
        rgba[labels == entry["label"]] = (*(np.array(io.hex_to_rgb(entry["color"])) / 255), .55)

    fig = plt.figure(figsize=(15, 4.9))
    grid = fig.add_gridspec(3, 3, width_ratios=(0.42, 1, 1), hspace=0.35, wspace=0.12)
    for i, name in enumerate(CHANNELS):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(planes[i], cmap="gray", extent=extent_in, vmin=low, vmax=high)
        ax.set_title(f"channel {i}: {name!r}", fontsize=8, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    ax1 = fig.add_subplot(grid[:, 1])
    ax2 = fig.add_subplot(grid[:, 2], sharex=ax1, sharey=ax1)
    ax1.imshow(composite, extent=extent_in, interpolation="nearest")
    ax1.set_title("--channels dyes: DAPI -> blue, EGFP -> green, mCherry -> red", fontsize=10)
    ax2.imshow(composite, extent=extent_in, interpolation="nearest")
    ax2.imshow(rgba, extent=extent_out, interpolation="nearest")
    ax2.set_title(f"label TIFF placed by its own OME-XML ({back.x:g} µm pixels)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("x (µm)")
        ax.plot([w * PIXEL_UM - 25, w * PIXEL_UM - 5], [h * PIXEL_UM - 5] * 2, color="white",
                linewidth=3)
        ax.text(w * PIXEL_UM - 15, h * PIXEL_UM - 7, "20 µm", color="white", ha="center",
                va="bottom", fontsize=8, fontweight="bold")
    ax1.set_ylabel("y (µm)")
    handles = [Patch(facecolor=c["color"], label=c["name"]) for c in meta["classes"]]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
               frameon=False)
    fig.suptitle("clipseg segment --channels dyes on a synthetic scene stored as a 3-channel "
                 "16-bit OME-TIFF (bundled toy model; shows the channel preset and the pixel "
                 "size round trip, not accuracy)", fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.99, top=0.88, bottom=0.17)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def search(count: int = 40) -> None:
    """Print, per held-out seed, the classes and the toy model's mIoU on the scene."""
    from clipseg.apps.synthetic import CLASS_NAMES, miou
    from clipseg.formats import io

    for seed in range(count):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _, scene = write_cells(folder / "cells.ome.tif", seed)
            colours = {n.split()[0] for n in scene.shapes}
            if not {"red", "green", "blue"} <= colours:
                continue
            names = _names(scene)
            if _segment(folder, names) != 0:
                continue
            labels, _ = io.read_labels(folder / "out" / "cells.ome")
            truth = np.zeros_like(labels)
            for k, name in enumerate(names):
                truth[scene.labels == CLASS_NAMES.index(name) + 1] = k + 1
            print(seed, f"{miou(labels, truth, len(names)):.2f}", names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the OME-TIFF and the outputs in DIR")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--search", action="store_true",
                        help="print candidate seeds (the scenes with a shape in each colour)")
    args = parser.parse_args(argv)
    if args.search:
        search()
        return 0
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(render(args.keep, args.output, args.seed))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(render(Path(tmp), args.output, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
