"""Dataset loaders on tiny datasets written in each benchmark's layout (16x16 files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseg.apps.datasets import (
    DATASETS,
    class_names,
    engine_to_dataset_lut,
    get_spec,
    open_dataset,
    prompt_classes,
)
from clipseg.errors import InvalidConfigError, InvalidInputError
from clipseg.text import parse_classes


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _label(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(values.astype(np.uint8), "L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def _grid(*values: int) -> np.ndarray:
    """16x16 label whose rows cycle through ``values`` (so each value is present)."""
    rows = np.array(values, dtype=np.uint8)[np.arange(16) % len(values)]
    return np.repeat(rows[:, None], 16, axis=1)


def test_voc20_and_voc21_share_files_but_map_background_differently(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(["a", "b"]):
        _image(voc / "JPEGImages" / f"{name}.jpg", i)
        _label(voc / "SegmentationClass" / f"{name}.png", _grid(0, 1, 15, 20, 255), palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")

    v21 = open_dataset("voc21", tmp_path)  # the folder holding VOCdevkit works too
    v20 = open_dataset("voc20", voc)
    assert len(v21) == len(v20) == 2 and v21.names == ["a", "b"]
    image, label21 = v21[0]
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert label21.dtype == np.uint8
    np.testing.assert_array_equal(label21[:5, 0], [0, 1, 15, 20, 255])
    _, label20 = v20[1]
    np.testing.assert_array_equal(label20[:5, 0], [255, 0, 14, 19, 255])


def test_context59_and_60(tmp_path):
    ctx = tmp_path / "VOC2010"
    _image(ctx / "JPEGImages" / "x.jpg")
    _label(ctx / "SegmentationClassContext" / "x.png", _grid(0, 1, 59, 255))
    (ctx / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (ctx / "ImageSets" / "SegmentationContext" / "val.txt").write_text("x\n")
    np.testing.assert_array_equal(open_dataset("context60", ctx)[0][1][:4, 0], [0, 1, 59, 255])
    np.testing.assert_array_equal(open_dataset("context59", ctx)[0][1][:4, 0], [255, 0, 58, 255])


def test_coco_stuff_raw_ids_are_mapped_182_to_171(tmp_path):
    root = tmp_path / "coco"
    _image(root / "images" / "val2017" / "raw.jpg")
    # raw stuffthingmaps ids: 0 person, 12 (stop sign: 11 is unused), 91 first stuff (banner),
    # 181 last stuff (wood), 255 unlabeled
    _label(root / "annotations" / "val2017" / "raw.png", _grid(0, 12, 91, 181, 255))
    _image(root / "images" / "val2017" / "tid.jpg", 1)
    _label(root / "annotations" / "val2017" / "tid_labelTrainIds.png", _grid(0, 170, 255))
    ds = open_dataset("coco_stuff", root)
    assert ds.names == ["raw", "tid"]
    names = class_names("coco_stuff")
    raw = ds[0][1][:5, 0]
    np.testing.assert_array_equal(raw, [0, 11, 80, 170, 255])
    assert [names[i] for i in raw[:4]] == ["person", "stop sign", "banner", "wood"]
    np.testing.assert_array_equal(ds[1][1][:3, 0], [0, 170, 255])  # converted files kept as is


def test_coco_stuff_unused_raw_id_is_rejected(tmp_path):
    root = tmp_path / "coco"
    _image(root / "images" / "val2017" / "raw.jpg")
    _label(root / "annotations" / "val2017" / "raw.png", _grid(0, 11))  # 11 is an unused slot
    with pytest.raises(InvalidInputError, match=r"unexpected label value\(s\) \[11\]"):
        open_dataset("coco_stuff", root)[0]


def test_coco_object_from_raw_and_from_instance_train_ids(tmp_path):
    root = tmp_path / "coco"
    _image(root / "images" / "val2017" / "raw.jpg")
    _label(root / "annotations" / "val2017" / "raw.png", _grid(0, 12, 90 - 1, 91, 150, 255))
    _image(root / "images" / "val2017" / "obj.jpg", 1)
    _label(root / "annotations" / "val2017" / "obj_instanceTrainIds.png", _grid(0, 1, 80, 255))
    ds = open_dataset("coco_object", root)
    names = class_names("coco_object")
    obj = ds[0][1][:4, 0]
    np.testing.assert_array_equal(obj, [0, 1, 80, 255])
    raw = ds[1][1][:6, 0]
    # person -> 1, stop sign -> 12, toothbrush (raw 89) -> 80, stuff -> background 0, 255 kept
    np.testing.assert_array_equal(raw, [1, 12, 80, 0, 0, 255])
    assert [names[i] for i in raw[:4]] == ["person", "stop sign", "toothbrush", "background"]


def test_ade150_reduce_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _image(root / "images" / "validation" / "ADE_val_1.jpg")
    _label(root / "annotations" / "validation" / "ADE_val_1.png", _grid(0, 1, 150))
    ds = open_dataset("ade150", root, split="val")
    np.testing.assert_array_equal(ds[0][1][:3, 0], [255, 0, 149])
    assert class_names("ade150")[149] == "flag"


def test_cityscapes_train_ids_and_label_ids(tmp_path):
    root = tmp_path / "cityscapes"
    _image(root / "leftImg8bit" / "val" / "bonn" / "bonn_0_leftImg8bit.png")
    _label(root / "gtFine" / "val" / "bonn" / "bonn_0_gtFine_labelIds.png",
           _grid(7, 26, 33, 0, 4))  # road, car, bicycle, unlabeled, static
    _image(root / "leftImg8bit" / "val" / "ulm" / "ulm_0_leftImg8bit.png", 1)
    _label(root / "gtFine" / "val" / "ulm" / "ulm_0_gtFine_labelTrainIds.png", _grid(0, 18, 255))
    _label(root / "gtFine" / "val" / "ulm" / "ulm_0_gtFine_labelIds.png", _grid(7))  # not used
    ds = open_dataset("cityscapes", root)
    assert ds.names == ["bonn_0", "ulm_0"]
    np.testing.assert_array_equal(ds[0][1][:5, 0], [0, 13, 18, 255, 255])
    np.testing.assert_array_equal(ds[1][1][:3, 0], [0, 18, 255])
    assert class_names("cityscapes")[13] == "car"


def test_missing_layout_and_colour_labels_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="JPEGImages"):
        open_dataset("voc20", tmp_path)
    with pytest.raises(InvalidConfigError, match="voc20"):
        open_dataset("pascal", tmp_path)
    root = tmp_path / "ADE"
    _image(root / "images" / "validation" / "a.jpg")
    _image(root / "annotations" / "validation" / "a.png")  # an RGB picture, not class ids
    with pytest.raises(InvalidInputError, match="8-bit class-id PNG"):
        open_dataset("ade150", root)[0]


@pytest.mark.parametrize("key", sorted(DATASETS))
@pytest.mark.parametrize("variant", ["plain", "sclip", "clearclip"])
def test_class_lists_have_one_line_per_class(key, variant):
    spec = get_spec(key)
    names = class_names(key, variant)
    assert len(names) == spec.num_classes
    first = [n.split(";")[0].strip() for n in names]
    assert len(set(first)) == len(first), "class names must be unique"
    if spec.background and variant in ("plain", "clearclip"):
        assert names[0] == "background"
    # the engine accepts the list as is (no synonym shared by two classes)
    assert len(parse_classes(names)) == spec.num_classes


def test_prompt_classes_and_engine_lut():
    names, ids = prompt_classes("voc21", "plain", background_prompt=False)
    assert len(names) == 20 and ids[0] == 1 and names[0] == "aeroplane"
    lut = engine_to_dataset_lut(ids, get_spec("voc21"))
    # engine label 0 (under threshold) -> background 0; label 1 (aeroplane) -> id 1
    np.testing.assert_array_equal(lut[[0, 1, 20]], [0, 1, 20])
    names, ids = prompt_classes("voc21", "sclip", background_prompt=True)
    lut = engine_to_dataset_lut(ids, get_spec("voc21"))
    assert names[0].startswith("sky;")
    np.testing.assert_array_equal(lut[[0, 1, 2]], [0, 0, 1])  # the background prompt -> 0
    _, ids = prompt_classes("voc20")
    lut = engine_to_dataset_lut(ids, get_spec("voc20"))
    np.testing.assert_array_equal(lut[[0, 1, 20]], [20, 0, 19])  # unlabeled -> "no class"
