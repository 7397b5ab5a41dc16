"""Physical pixel sizes in napari: the reader's scale, the widget's result layer, the writer."""
from __future__ import annotations

import numpy as np
import pytest

from clipseg.formats import io, ome
from napari_clipseg.labels_layer import class_table_kwargs
from napari_clipseg.spatial import layer_kwargs, pixel_size_of
from tests.core.test_ome import ome_sizes


def _units(layer) -> list[str]:
    return [str(u) for u in layer.units]


def test_reader_gives_the_layer_the_sidecar_pixel_size(make_napari_viewer, tmp_path):
    labels = np.zeros((12, 16), np.uint8)
    labels[2:6, 3:9] = 1
    io.write_labels(tmp_path / "cells", labels, ["nucleus"],
                    pixel_size={"y": 0.4, "x": 0.325, "source": "ome-tiff"})
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "cells.tif"), plugin="napari-clipseg")
    np.testing.assert_allclose(layer.scale, (0.4, 0.325))
    assert _units(layer) == ["micrometer", "micrometer"]
    # a result without a pixel size opens at napari's default scale
    io.write_labels(tmp_path / "plain", labels, ["nucleus"])
    [plain] = viewer.open(str(tmp_path / "plain.png"), plugin="napari-clipseg")
    np.testing.assert_allclose(plain.scale, (1.0, 1.0))
    assert _units(plain) == ["pixel", "pixel"]


def test_widget_result_layer_takes_the_image_layer_scale_and_units(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    image = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
    src = viewer.add_image(image, name="cells", scale=(0.4, 0.325), translate=(5.0, 2.0),
                           units=("µm", "µm"), contrast_limits=(0.0, 1.0))
    widget.set_layer("cells")
    widget.classes.set_text("nucleus, cytoplasm")
    widget.scores.setChecked(True)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    layer = viewer.layers["cells labels"]
    np.testing.assert_allclose(layer.scale, src.scale)
    np.testing.assert_allclose(layer.translate, src.translate)
    assert _units(layer) == _units(src) == ["micrometer", "micrometer"]
    score = viewer.layers["cells score: nucleus"]
    assert _units(score) == ["micrometer", "micrometer"]


def test_writer_records_the_layer_scale_and_the_reader_restores_it(make_napari_viewer,
                                                                   tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((10, 14), np.uint8)
    data[1:5, 2:8] = 1
    layer = viewer.add_labels(data, name="d", scale=(650.0, 500.0), units=("nm", "nm"),
                              **class_table_kwargs(["cell"]))
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "d.tif"), selected=True, plugin="napari-clipseg")
    meta = io.read_sidecar(tmp_path / "d")
    assert meta["pixel_size"] == {"y": 0.65, "x": 0.5, "unit": "µm"}
    assert ome_sizes(tmp_path / "d.tif") == (0.5, "µm", 0.65, "µm")
    [back] = viewer.open(str(tmp_path / "d.tif"), plugin="napari-clipseg")
    np.testing.assert_allclose(back.scale, (0.65, 0.5))
    # a PNG cannot carry it; the sidecar does, and the reader uses it
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "p.png"), selected=True, plugin="napari-clipseg")
    [png] = viewer.open(str(tmp_path / "p.png"), plugin="napari-clipseg")
    np.testing.assert_allclose(png.scale, (0.65, 0.5))


@pytest.mark.parametrize("scale, units, want", [
    ((0.5, 0.25), ("micrometer", "micrometer"), {"y": 0.5, "x": 0.25}),
    ((3.0, 0.5, 0.25), ("micrometer",) * 3, {"y": 0.5, "x": 0.25}),   # the last two axes
    ((0.5, 0.25), ("pixel", "pixel"), {"y": 0.5, "x": 0.25}),         # reader set scale only
    ((1.0, 1.0), ("pixel", "pixel"), None),                           # napari's default
    ((1.0, 1.0), None, None),
    ((2.0, 2.0), ("second", "second"), None),                         # not a length
    ((0.001, 0.002), ("millimeter", "millimeter"), {"y": 1.0, "x": 2.0}),
])
def test_pixel_size_of_a_layer(scale, units, want):
    got = pixel_size_of(scale, units)
    assert got == (pytest.approx(want) if want else None)


def test_layer_kwargs_of_a_stack_and_of_a_bad_entry():
    meta = {"pixel_size": {"y": 0.5, "x": 0.25, "unit": "µm"}}
    assert layer_kwargs(meta, 3) == {"scale": (1.0, 0.5, 0.25),
                                     "units": ("pixel", "µm", "µm")}
    with pytest.warns(ome.SpatialWarning):
        assert layer_kwargs({"pixel_size": {"y": -1, "x": 1}}) == {}
