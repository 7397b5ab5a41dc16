"""Fixtures for the napari plugin tests: a real viewer (Xvfb via pytest-xvfb), the widget opened
through the manifest, and the tiny random-init open_clip model injected (no download)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_API", "pyqt6")

import numpy as np
import pytest

WIDGET = "CLIP open-vocabulary segmentation"
TINY = "tiny (test)"


@pytest.fixture(scope="session")
def tiny_loaded(tiny_clip, tiny_model_name):
    """The tiny model wrapped as the engine's LoadedModel (CPU, fp32)."""
    from clipseg.models import wrap_model

    return wrap_model(tiny_clip, name=tiny_model_name)


@pytest.fixture
def viewer_widget(make_napari_viewer, tiny_loaded):
    """(viewer, widget): the dock widget opened through napari.yaml, tiny model selected,
    images kept at their size (short side 0 = original) and 2 windows per batch."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipseg", WIDGET)
    widget.add_model(TINY, tiny_loaded)
    widget.settings.device.setCurrentText("cpu")
    widget.settings.short_side.setValue(0)
    widget.settings.batch_size.setValue(2)
    return viewer, widget


def reference(tiny_loaded, image01: np.ndarray, classes: str, **options):
    """What the engine itself returns for ``image01`` (H, W, 3) float32, with the widget's
    settings: the independent computation the widget's layers are compared with."""
    from clipseg.config import SegmentConfig
    from clipseg.pipeline import Segmenter

    flat = {"model": TINY, "device": "cpu", "short_side": 0, "batch_size": 2, **options}
    return Segmenter(SegmentConfig.from_flat(flat), model=tiny_loaded).segment(image01, classes)
