"""Sample data opens offline through the manifest."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("key, shape, rgb", [("ihc", (512, 512, 3), True),
                                             ("cell", (660, 550), False),
                                             ("coffee", (400, 600, 3), True)])
def test_scikit_image_samples(make_napari_viewer, key, shape, rgb):
    viewer = make_napari_viewer()
    [layer] = viewer.open_sample("napari-clipseg", key)
    assert layer.data.shape == shape and layer.rgb == rgb
    assert layer.metadata["clipseg_classes"]


def test_synthetic_scene_with_ground_truth(make_napari_viewer):
    from clipseg.apps.synthetic import CLASS_NAMES

    viewer = make_napari_viewer()
    image, truth = viewer.open_sample("napari-clipseg", "shapes")
    assert image.data.shape == (128, 128, 3) and image.data.dtype == np.float32
    assert truth.data.shape == (128, 128)
    present = [CLASS_NAMES[v - 1] for v in np.unique(truth.data)]
    assert present == image.metadata["clipseg_classes"]
    assert list(truth.features["class"])[1:] == list(CLASS_NAMES)
