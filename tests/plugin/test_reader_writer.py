"""Writer -> reader round trip through napari: names, synonyms and colors come back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipseg.errors import InvalidInputError
from napari_clipseg.labels_layer import (
    class_table_kwargs,
    known_classes,
    layer_class_colors,
    layer_class_names,
)
from napari_clipseg.reader import get_reader
from napari_clipseg.writer import write_labels


def _labels() -> np.ndarray:
    data = np.zeros((20, 30), np.uint8)
    data[2:8, 3:12] = 1
    data[10:18, 5:25] = 2
    data[0, 29] = 3
    return data


def test_round_trip_through_the_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    kwargs = class_table_kwargs(["road", "tree", "sky"], synonyms=[["road", "street"], ["tree"],
                                                                   ["sky"]],
                                model="tiny", colors=["#102030", "#00ff00", "#abcdef"])
    layer = viewer.add_labels(_labels(), name="scene labels", **kwargs)
    viewer.layers.selection = {layer}
    paths = viewer.layers.save(str(tmp_path / "scene.png"), selected=True,
                               plugin="napari-clipseg")  # napari -> npe2 -> our writer
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["scene.clipseg.json", "scene.png"]
    side = json.loads((tmp_path / "scene.clipseg.json").read_text())
    assert [c["name"] for c in side["classes"]] == ["road", "tree", "sky"]
    assert side["classes"][0]["synonyms"] == ["road", "street"]
    assert side["model"] == "tiny"

    assert get_reader(str(tmp_path / "scene.png")) is not None
    [back] = viewer.open(str(tmp_path / "scene.png"), plugin="napari-clipseg")
    np.testing.assert_array_equal(np.asarray(back.data), _labels())
    assert layer_class_names(back) == ["road", "tree", "sky"]
    assert layer_class_colors(back, 3) == ["#102030", "#00ff00", "#abcdef"]
    assert known_classes(back)[1] == ("road", ["road", "street"])


def test_plain_labels_layer_gets_generic_names(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(_labels(), name="hand made")
    data, meta, _ = layer.as_layer_data_tuple()
    write_labels(str(tmp_path / "hand.tif"), data, meta)
    side = json.loads((tmp_path / "hand.clipseg.json").read_text())
    assert [c["name"] for c in side["classes"]] == ["label 1", "label 2", "label 3"]
    # the colors saved are those napari drew for labels 1..3
    drawn = layer.colormap.map(np.array([1, 2, 3], dtype=np.uint8))
    saved = [c["color"] for c in side["classes"]]
    assert saved == ["#" + "".join(f"{round(v * 255):02x}" for v in c[:3]) for c in drawn]


def test_reader_ignores_images_without_a_sidecar(tmp_path):
    from PIL import Image

    Image.fromarray(_labels()).save(tmp_path / "other.png")
    assert get_reader(str(tmp_path / "other.png")) is None


def test_a_stack_is_written_plane_by_plane(tmp_path):
    stack = np.stack([_labels(), _labels()[::-1]])
    meta = {"name": "stack", **class_table_kwargs(["road", "tree", "sky"])}
    paths = write_labels(str(tmp_path / "stack.png"), stack, meta)
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "stack_z000.png", "stack_z000.clipseg.json", "stack_z001.png", "stack_z001.clipseg.json"]
    from clipseg.formats.io import read_labels

    for z in range(2):
        labels, side = read_labels(tmp_path / f"stack_z{z:03d}.png")
        np.testing.assert_array_equal(labels, stack[z])
        assert side["image"]["plane"] == [z]
        assert [c["name"] for c in side["classes"]] == ["road", "tree", "sky"]


def test_writer_refuses_float_data_with_a_clear_message(tmp_path):
    with pytest.raises(InvalidInputError, match="integer labels"):
        write_labels(str(tmp_path / "x.tif"), np.zeros((5, 5), np.float32), {"name": "f"})
