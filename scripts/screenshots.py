"""Regenerate the screenshots of docs/widget.md from the running widget.

Run under a display (Xvfb on a headless machine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

It opens napari, loads the offline synthetic sample, opens the dock widget through the
manifest, runs the bundled demo model ``clipseg-demo-tiny`` (no download), then walks the
annotation loop (corrections by hand, a class removed and a threshold raised, live updates)
and saves:

- ``docs/images/widget-panel.png``: the dock widget, its scrolling part in full with the
  pinned run bar under it;
- ``docs/images/widget-result.png``: the whole window with the result layer and its legend;
- ``docs/images/widget-corrected.png``: the window after hand corrections and live updates
  (the corrections kept, the rest re-labelled);
- ``docs/images/widget-question.png``: the panel asking "channels or planes?" about a
  ``(3, Y, X)`` image;
- ``docs/images/widget-scores.png``: the canvas showing one per-class score layer.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

# torch / open_clip first: importing triton (pulled in by torchvision) after napari has made
# a Mesa GL context crashes on some Linux software-GL setups.
import open_clip  # noqa: F401
import torch

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
WIDGET = "CLIP open-vocabulary segmentation"


def _settle(app, seconds: float = 0.3) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)


def _wait_live(app, widget, updates: int) -> None:
    end = time.perf_counter() + 60
    while (widget.live.updates < updates or widget.worker is not None) \
            and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)
    if widget.live.updates < updates:
        raise SystemExit(f"no live update: {widget.status.text()}")


def _panel(widget, path: Path) -> None:
    """The scrolling part in full, the pinned run bar under it, as one picture."""
    from qtpy.QtGui import QPainter, QPixmap

    body, bar = widget.body.grab(), widget.run_bar.grab()
    width = max(body.width(), bar.width())
    out = QPixmap(width, body.height() + bar.height())
    out.fill(widget.palette().window().color())
    painter = QPainter(out)
    painter.drawPixmap(0, 0, body)
    painter.drawPixmap(0, body.height(), bar)
    painter.end()
    out.save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    parser.add_argument("--model", default="clipseg-demo-tiny", help="registry model to run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-clipseg")
    app = QApplication.instance()
    viewer.window.resize(1600, 1000)
    image, truth = viewer.open_sample("napari-clipseg", "shapes")
    truth.visible = False
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipseg", WIDGET)
    widget.set_layer(image.name)
    widget.settings.set_model(args.model)
    widget.settings.device.setCurrentText("cpu")
    widget.classes.suggest_button.click()  # the sample's own class list
    names = widget.classes.class_names()
    widget.scores.setChecked(True)
    layer = widget.run_blocking()
    if layer is None:
        raise SystemExit(f"the run failed: {widget.status.text()}")
    viewer.layers.selection = {layer}
    _settle(app)
    viewer.reset_view()  # once the dock has taken its width
    _settle(app)
    _panel(widget, args.out / "widget-panel.png")
    viewer.screenshot(str(args.out / "widget-result.png"), canvas_only=False)

    # the loop: corrections by hand, then class and threshold edits updated live
    widget.scores.setChecked(False)
    legend = widget.legend
    legend.select_row(legend.row_of(names[0]))   # paint with the first class, from the legend
    layer.brush_size = 14
    h, w = layer.data.shape
    with layer.block_history():                  # one stroke across the top
        for x in range(8, w - 8, 4):
            layer.paint((14, x), layer.selected_label)
    with layer.block_history():                  # the eraser: "unlabeled here"
        for y in range(h - 36, h - 8, 4):
            for x in range(w - 40, w - 8, 4):
                layer.paint((y, x), 0)
    widget.live.delay_ms = 50
    before = widget.live.updates
    widget.classes.set_text("\n".join(names[:-1]))  # the last class removed
    _wait_live(app, widget, before + 1)
    widget.settings.threshold.setValue(0.35)         # doubtful pixels left to the person
    _wait_live(app, widget, before + 2)
    viewer.layers.selection = {layer}
    _settle(app)
    viewer.screenshot(str(args.out / "widget-corrected.png"), canvas_only=False)

    first = names[0]
    layer.visible = False
    viewer.layers[f"{image.name} score: {first}"].visible = True
    _settle(app)
    viewer.screenshot(str(args.out / "widget-scores.png"), canvas_only=True)

    # the question about a short first axis
    stack = np.moveaxis(np.asarray(image.data), -1, 0).astype(np.float32) / 255.0
    viewer.add_image(stack, name="three channels or planes", contrast_limits=(0.0, 1.0))
    widget.set_layer("three channels or planes")
    widget._scroll.verticalScrollBar().setValue(0)
    _settle(app)
    widget.grab().save(str(args.out / "widget-question.png"))
    print("wrote", *sorted(p.name for p in args.out.glob("widget-*.png")))
    print("status after the loop:", widget.status.text())
    viewer.close()


if __name__ == "__main__":
    main()
