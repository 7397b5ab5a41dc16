"""The label file format: PNG/TIFF + sidecar, atomic writes, colors, config hash."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from clipseg.config import SegmentConfig
from clipseg.errors import InvalidInputError
from clipseg.formats import io


def _labels(shape=(20, 30), k=3, seed=0):
    return np.random.default_rng(seed).integers(0, k + 1, shape).astype(np.uint8)


def test_png_round_trip_and_sidecar(tmp_path):
    labels = _labels()
    cfg = SegmentConfig().replace(tau=5.0)
    paths = io.write_labels(tmp_path / "a", labels, ["road", "tree", "sky"],
                            synonyms=[["road", "street"], ["tree"], []], model="m",
                            config=cfg, image_info={"path": "src.jpg"})
    assert [p.name for p in paths] == ["a.png", "a.clipseg.json"]
    for probe in (tmp_path / "a.png", tmp_path / "a.clipseg.json", tmp_path / "a"):
        back, meta = io.read_labels(probe)
        np.testing.assert_array_equal(back, labels)
    side = json.loads((tmp_path / "a.clipseg.json").read_text())
    assert side["version"] == 1 and side["file"] == "a.png" and side["model"] == "m"
    assert [c["label"] for c in side["classes"]] == [1, 2, 3]
    assert side["classes"][0]["synonyms"] == ["road", "street"]
    assert side["classes"][2]["synonyms"] == ["sky"]
    assert [c["color"] for c in side["classes"]] == io.class_colors(3)
    assert side["config"] == cfg.to_flat()
    assert SegmentConfig.from_flat(side["config"]) == cfg
    assert side["image"] == {"path": "src.jpg", "shape": [20, 30]}


def test_png_is_a_palette_image_with_the_class_colors(tmp_path):
    labels = _labels()
    colors = ["#102030", (255, 0, 128), (0.0, 1.0, 0.5)]
    io.write_labels(tmp_path / "a.png", labels, ["a", "b", "c"], colors=colors)
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "P"
        assert img.info["transparency"] == 0
        pal = img.getpalette()[:12]
        np.testing.assert_array_equal(np.asarray(img), labels)
    assert pal == [0, 0, 0, 0x10, 0x20, 0x30, 255, 0, 128, 0, 255, 128]


def test_many_classes_go_to_tiff_and_read_lazily(tmp_path):
    labels = np.zeros((1100, 1030), np.uint16)
    labels[3, 4], labels[-1, -1] = 300, 7
    names = [f"c{i}" for i in range(300)]
    image, _ = io.write_labels(tmp_path / "big", labels, names)
    assert image.name == "big.tif"
    assert tifffile.imread(image).dtype == np.uint16
    lazy, meta = io.read_labels(image, lazy=True)
    assert not isinstance(lazy, np.ndarray) or isinstance(lazy, np.memmap)
    assert lazy.shape == labels.shape
    np.testing.assert_array_equal(np.asarray(lazy[:]), labels)
    assert len(meta["classes"]) == 300
    with pytest.raises(InvalidInputError, match="PNG"):
        io.write_labels(tmp_path / "x.png", labels, names)


def test_explicit_tif_suffix_is_honoured(tmp_path):
    labels = _labels()
    image, _ = io.write_labels(tmp_path / "t.tif", labels, ["a", "b", "c"])
    assert image.name == "t.tif" and tifffile.imread(image).dtype == np.uint8


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8),
                                 np.full((4, 4), 4, np.uint8), np.full((4, 4), -1, np.int16)])
def test_bad_labels_are_refused(tmp_path, bad):
    with pytest.raises(InvalidInputError, match="labels"):
        io.write_labels(tmp_path / "a", bad, ["a", "b", "c"])
    assert list(tmp_path.iterdir()) == []


def test_missing_sidecar_is_an_error(tmp_path):
    Image.fromarray(_labels()).save(tmp_path / "plain.png")
    assert io.find_sidecar(tmp_path / "plain.png") is None
    with pytest.raises(InvalidInputError, match="sidecar"):
        io.read_labels(tmp_path / "plain.png")


def test_failed_rewrite_leaves_no_complete_looking_result(tmp_path, monkeypatch):
    io.write_labels(tmp_path / "a", _labels(), ["a", "b", "c"])

    def boom(tmp, labels, colors):
        tmp.write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_png", boom)
    with pytest.raises(OSError, match="disk full"):
        io.write_labels(tmp_path / "a", _labels(seed=1), ["a", "b", "c"])
    # the old sidecar went first, the temp file is gone: nothing claims to be complete
    assert io.find_sidecar(tmp_path / "a") is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_class_colors_are_fixed_and_distinct():
    many = io.class_colors(200)
    assert len(set(many)) == 200
    assert io.class_colors(7) == many[:7]
    assert all(len(c) == 7 and c.startswith("#") for c in many)
    with pytest.raises(InvalidInputError):
        io.class_colors(-1)


def test_run_hash_ignores_where_it_runs_but_not_what_it_computes():
    classes = [{"name": "a", "synonyms": ["a"]}, {"name": "b", "synonyms": ["b", "bee"]}]
    base = SegmentConfig()
    h = io.run_hash(base, classes)
    assert io.run_hash(base.replace(device="cpu", batch_size=3, pamr_tile=64), classes) == h
    assert io.run_hash(base.replace(tau=5.0), classes) != h
    assert io.run_hash(base, classes[::-1]) != h
    assert io.run_hash(base, [classes[0], {"name": "b", "synonyms": ["b"]}]) != h


def test_edit_mask_round_trip(tmp_path):
    labels = _labels()
    edits = np.zeros(labels.shape, bool)
    edits[2:9, 4:11] = True
    edits[0, 29] = True
    paths = io.write_labels(tmp_path / "a", labels, ["road", "tree", "sky"], edits=edits)
    assert [p.name for p in paths] == ["a.png", "a.edits.png", "a.clipseg.json"]
    side = json.loads((tmp_path / "a.clipseg.json").read_text())
    assert side["version"] == 1 and side["edits"] == "a.edits.png"
    with Image.open(tmp_path / "a.edits.png") as img:
        assert img.mode == "1" and img.size == (30, 20)  # 1 bit per pixel
    for probe in (tmp_path / "a.png", tmp_path / "a.clipseg.json"):
        back, meta = io.read_labels(probe)
        np.testing.assert_array_equal(back, labels)
        assert meta["edits"].dtype == bool
        np.testing.assert_array_equal(meta["edits"], edits)
        assert meta["edits_file"] == "a.edits.png"


def test_a_result_without_edits_has_none_and_rewriting_drops_an_old_mask(tmp_path):
    labels = _labels()
    io.write_labels(tmp_path / "a", labels, ["road", "tree", "sky"],
                    edits=np.ones(labels.shape, np.uint8))
    assert (tmp_path / "a.edits.png").is_file()
    # rewritten with an all-False mask: no mask file, no key, nothing stale left behind
    paths = io.write_labels(tmp_path / "a", labels, ["road", "tree", "sky"],
                            edits=np.zeros(labels.shape, bool))
    assert [p.name for p in paths] == ["a.png", "a.clipseg.json"]
    assert not (tmp_path / "a.edits.png").exists()
    side = json.loads((tmp_path / "a.clipseg.json").read_text())
    assert "edits" not in side
    _, meta = io.read_labels(tmp_path / "a.png")
    assert meta["edits"] is None and meta["edits_file"] is None


@pytest.mark.parametrize("bad, match", [(np.ones((3, 3), bool), "labels' shape"),
                                        (np.full((20, 30), 2, np.uint8), "0 .machine. or 1"),
                                        (np.zeros((20, 30), np.float32), "bool")])
def test_bad_edit_masks_are_refused(tmp_path, bad, match):
    with pytest.raises(InvalidInputError, match=match):
        io.write_labels(tmp_path / "a", _labels(), ["a", "b", "c"], edits=bad)
    assert not list(tmp_path.iterdir())


def test_a_sidecar_naming_a_missing_mask_is_an_error(tmp_path):
    labels = _labels()
    io.write_labels(tmp_path / "a", labels, ["a", "b", "c"], edits=labels > 1)
    (tmp_path / "a.edits.png").unlink()
    with pytest.raises(InvalidInputError, match="a.edits.png, which is missing"):
        io.read_labels(tmp_path / "a.png")
