"""Regenerate the screenshots of docs/widget.md from the running widget.

Run under a display (Xvfb on a headless machine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

It opens napari, loads the offline synthetic sample, opens the dock widget through the
manifest, runs the bundled demo model ``clipseg-demo-tiny`` (no download) and saves:

- ``docs/images/widget-panel.png``: the dock widget alone (``QWidget.grab``);
- ``docs/images/widget-result.png``: the whole window with the result layer;
- ``docs/images/widget-scores.png``: the canvas showing one per-class score layer.
"""
from __future__ import annotations

import argparse
from pathlib import Path

# torch / open_clip first: importing triton (pulled in by torchvision) after napari has made
# a Mesa GL context crashes on some Linux software-GL setups.
import open_clip  # noqa: F401
import torch

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
WIDGET = "CLIP open-vocabulary segmentation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    parser.add_argument("--model", default="clipseg-demo-tiny", help="registry model to run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import napari
    from qtpy.QtWidgets import QApplication

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-clipseg")
    viewer.window.resize(1500, 950)
    image, truth = viewer.open_sample("napari-clipseg", "shapes")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipseg", WIDGET)
    widget.set_layer(image.name)
    widget.settings.set_model(args.model)
    widget.settings.device.setCurrentText("cpu")
    widget.classes.suggest_button.click()  # the sample's own class list
    widget.classes.set_threshold(widget.classes.class_names()[0], 0.3)
    widget.scores.setChecked(True)
    layer = widget.run_blocking()
    if layer is None:
        raise SystemExit(f"the run failed: {widget.status.text()}")
    viewer.layers.selection = {layer}
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()

    widget.body.grab().save(str(args.out / "widget-panel.png"))  # the whole panel, unscrolled
    viewer.screenshot(str(args.out / "widget-result.png"), canvas_only=False)

    first = widget.classes.class_names()[0]
    layer.visible = False
    viewer.layers[f"{image.name} score: {first}"].visible = True
    QApplication.processEvents()
    viewer.screenshot(str(args.out / "widget-scores.png"), canvas_only=True)
    print("wrote", *sorted(p.name for p in args.out.glob("widget-*.png")))
    viewer.close()


if __name__ == "__main__":
    main()
