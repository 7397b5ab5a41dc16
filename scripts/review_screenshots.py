"""Regenerate the screenshots of docs/annotate-a-dataset.md (the "Review a dataset" widget).

Run under a display (Xvfb on a headless machine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/review_screenshots.py

It generates a folder of synthetic scenes (:mod:`clipseg.apps.synthetic`), drafts them with
``clipseg batch`` and the bundled demo model ``clipseg-demo-tiny`` (no download), opens the
review widget through the manifest, corrects and accepts the first images, marks a shape class
as a "thing", and saves:

- ``docs/images/review-window.png``: the window with the image, its draft, the Instances layer
  and the widget;
- ``docs/images/review-panel.png``: the widget's scrolling part in full, with its message bar;
- ``docs/images/review-readonly.png``: the widget after opening a read-only drafts folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

# torch / open_clip first: importing triton (pulled in by torchvision) after napari has made
# a Mesa GL context crashes on some Linux software-GL setups.
import open_clip  # noqa: F401
import torch

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
REVIEW = "Review a dataset"
N_IMAGES = 12


def _settle(app, widget=None, seconds: float = 0.3, timeout: float = 120.0) -> None:
    end = time.perf_counter() + timeout
    while widget is not None and not widget.idle() and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)


def _panel(widget, path: Path) -> None:
    """The scrolling part in full, the message bar under it, as one picture."""
    from qtpy.QtGui import QPainter, QPixmap

    body, bar = widget.body.grab(), widget.message_bar.grab()
    out = QPixmap(max(body.width(), bar.width()), body.height() + bar.height())
    out.fill(widget.palette().window().color())
    painter = QPainter(out)
    painter.drawPixmap(0, 0, body)
    painter.drawPixmap(0, body.height(), bar)
    painter.end()
    out.save(str(path))


def make_dataset(root: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    from clipseg.apps.cli import main as cli
    from clipseg.apps.synthetic import CLASS_NAMES, make_scene
    from clipseg.models.bundled import BUNDLED_ARCH

    images = root / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        scene = make_scene(1_000_100 + i, (128, 128), n_shapes=(2, 4), radius=(14.0, 26.0))
        Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(
            images / f"scene_{i:03d}.png")
    rc = cli(["batch", str(images), "--classes", ", ".join(CLASS_NAMES), "-o",
              str(root / "drafts"), "--model", BUNDLED_ARCH, "--device", "cpu", "--quiet"])
    if rc != 0:
        raise SystemExit(f"clipseg batch failed ({rc})")
    return images, root / "drafts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="clipseg-review-shots-"))
    try:
        images, drafts = make_dataset(root)
        viewer = napari.Viewer(title="napari-clipseg")
        app = QApplication.instance()
        viewer.window.resize(1600, 1000)
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipseg", REVIEW)
        widget.open_folders(images, drafts)
        _settle(app, widget)
        # accept three images, the second one after a correction
        for k in range(3):
            if k == 1:
                layer = widget.labels_layer
                layer.brush_size = 12
                label = int(np.bincount(layer.data.ravel()).argmax())
                with layer.block_history():
                    for x in range(10, 60, 4):
                        layer.paint((20, x), label)
            widget.accept_next()
            _settle(app, widget)
        layer = widget.labels_layer
        names = widget.series.table.names
        present = [int(v) for v in np.unique(layer.data) if v > 0]
        shapes = [names[v - 1] for v in present if " " in names[v - 1]]  # "red circle"...
        widget.set_things(shapes[:2])
        widget.cycle_class(1)
        _settle(app, widget)
        viewer.reset_view()
        _settle(app)
        viewer.screenshot(str(args.out / "review-window.png"), canvas_only=False)
        _panel(widget, args.out / "review-panel.png")
        print("status:", widget.status.text())
        print("progress:", widget.progress.text())

        # a read-only drafts folder (as root the mode bits do not stop writes: probe them)
        os.chmod(drafts, 0o555)
        try:
            probe = None if os.geteuid() != 0 else (lambda p: os.stat(p).st_mode & 0o222 != 0)
            widget.open_folders(images, drafts, writable=probe)
            _settle(app, widget)
            widget.grab().save(str(args.out / "review-readonly.png"))
        finally:
            os.chmod(drafts, 0o755)
        print("wrote", *sorted(p.name for p in args.out.glob("review-*.png")))
        widget.close_review()
        viewer.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
