"""``clipseg evaluate`` end to end on a tiny generated VOC-layout dataset with the tiny model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from clipseg.apps.cli import main
from clipseg.apps.datasets import engine_to_dataset_lut, get_spec, open_dataset, prompt_classes
from clipseg.apps.evaluate import (
    PROTOCOLS,
    EvalReport,
    EvalSettings,
    evaluate,
    resolve_settings,
    table1_markdown,
    write_outputs,
)
from clipseg.errors import InvalidConfigError
from clipseg.pipeline import Segmenter

TINY_WINDOW = {"short_side": 32, "crop": 32, "stride": 16, "device": "cpu"}


@pytest.fixture
def voc_root(tmp_path):
    """Three 24x32 VOC images; labels use background, 3 classes and the 255 boundary."""
    root = tmp_path / "VOC2012"
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    names = [f"img{i}" for i in range(3)]
    for i, name in enumerate(names):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((24, 32), np.uint8)
        label[:, 8:16] = 15          # person
        label[:12, 16:] = 7 + i      # car / cat / chair
        label[:, 15] = 255           # boundary, ignored
        Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def _independent_miou(pred_list, gt_list, n):
    """IoU per class from per-pixel loops over the whole dataset (no confusion matrix)."""
    pred = np.concatenate([p.ravel() for p in pred_list])
    gt = np.concatenate([g.ravel() for g in gt_list])
    valid = gt != 255
    ious = []
    for c in range(n):
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union:
            ious.append(np.sum((pred == c) & (gt == c) & valid) / union)
    return float(np.mean(ious))


def test_evaluate_matches_a_direct_segmenter_run(voc_root, tiny_clip, tiny_model_name,
                                                 tmp_path):
    key = "voc21"
    dataset = open_dataset(key, voc_root)
    # plain names without a background prompt keep the text encoding short on 2 CPU cores
    settings = resolve_settings("paper", key, {**TINY_WINDOW, "model": tiny_model_name,
                                               "pamr_dilations": (1, 2), "names": "plain",
                                               "background_prompt": False, "threshold": 0.5})
    assert settings.config.refine.pamr is True  # the paper protocol refines with PAMR
    seg = Segmenter(settings.config, model=tiny_clip)
    report = evaluate(dataset, settings, model=seg)

    # the same pipeline, called directly, with the id mapping written out here: engine label 0
    # (under the threshold) is background 0, label k + 1 is prompted class k = VOC id k + 1
    names, ids = prompt_classes(key, settings.names, settings.background_prompt)
    assert ids == list(range(1, 21))
    preds, gts = [], []
    for i in range(len(dataset)):
        image, gt = dataset[i]
        labels = seg.segment(image, names).labels.astype(int)
        preds.append(labels)  # engine label == VOC id for this prompt list
        gts.append(gt)
    assert any((p == 0).any() for p in preds), "the threshold should leave some background"
    assert report.miou == pytest.approx(_independent_miou(preds, gts, 21))
    assert 0.0 <= report.miou <= 1.0 and 0.0 <= report.pixel_accuracy <= 1.0
    assert report.num_images == 3 and report.images_per_second > 0
    valid_pixels = sum(int(np.sum(g != 255)) for g in gts)
    assert np.sum(report.confusion) == valid_pixels
    assert len(report.per_class_iou) == len(report.class_names) == 21
    assert report.config["short_side"] == 32 and report.config["pamr"] is True

    limited = evaluate(dataset, settings, model=seg, limit=2)
    assert limited.num_images == 2
    assert np.sum(limited.confusion) == sum(int(np.sum(g != 255)) for g in gts[:2])
    js, md = write_outputs([report], tmp_path / "out")
    data = json.loads(js.read_text())
    assert data[0]["dataset"] == "voc21" and data[0]["num_images"] == 3
    assert set(data[0]["per_class_iou"]) == set(report.class_names)
    assert math.isclose(data[0]["miou"], report.miou)
    text = md.read_text()
    assert "| Methods | VLM | C60 | COCO | V20 |" in text and "V21" in text
    assert "| person |" in text  # the per-class table

    other = resolve_settings("tcl", key, {**TINY_WINDOW, "model": tiny_model_name})
    with pytest.raises(InvalidConfigError, match="different config"):
        evaluate(dataset, other, model=seg)


def test_resolve_settings_precedence():
    s = resolve_settings("sclip", "cityscapes")
    assert s.config.window.short_side == 560 and s.config.readout.method == "sclip"
    assert s.names == "sclip"
    s = resolve_settings("sclip", "voc21", {"threshold": 0.3, "names": "plain"})
    assert s.config.labels.logit_scale == 65.0      # per-dataset value
    assert s.config.labels.threshold == 0.3         # the caller's override wins
    assert s.names == "plain"
    s = resolve_settings("tcl", "coco_object")
    assert (s.config.window.crop, s.config.window.stride) == (448, 224)
    assert s.background_prompt is False and s.config.labels.threshold == 0.4
    assert resolve_settings("tcl", "ade150").config.labels.threshold == 0.0
    for name in PROTOCOLS:  # every preset is valid for every dataset
        for key in ("voc20", "voc21", "context59", "context60", "coco_stuff", "coco_object",
                    "ade150", "cityscapes"):
            assert isinstance(resolve_settings(name, key), EvalSettings)
    with pytest.raises(InvalidConfigError, match="unknown option"):
        resolve_settings("paper", "voc20", {"shortside": 3})
    with pytest.raises(InvalidConfigError, match="protocol"):
        resolve_settings("mmseg", "voc20")
    with pytest.raises(InvalidConfigError, match="names"):
        resolve_settings("paper", "voc20", {"names": "fancy"})


def _report(column, miou, method="clipseg", model="ViT-B-16/openai"):
    return EvalReport(dataset=column.lower(), column=column, title=column, model=model,
                      method=method, protocol="paper", names="plain", background_prompt=True,
                      num_images=1, miou=miou, pixel_accuracy=0.5, class_names=["a"],
                      per_class_iou=[miou], seconds=1.0, images_per_second=1.0, config={},
                      confusion=[[1, 0]])


def test_table1_layout_and_average():
    table = table1_markdown([_report("V20", 0.835), _report("C60", 0.353),
                             _report("V20", 0.741, method="clearclip")])
    lines = table.strip().splitlines()
    assert lines[0] == ("| Methods | VLM | C60 | COCO | V20 | CITY | STUFF | A150 | A847 | C59 "
                        "| C459 | Avg. |")
    assert lines[2] == ("| clipseg | ViT-B-16/openai | 35.3 | - | 83.5 | - | - | - | - | - | - "
                        "| 59.4 |")
    assert lines[3].startswith("| clearclip | ViT-B-16/openai | - | - | 74.1 |")


def test_lut_is_what_the_harness_uses():
    _, ids = prompt_classes("context60", "plain", background_prompt=False)
    lut = engine_to_dataset_lut(ids, get_spec("context60"))
    assert lut[0] == 0 and lut[1] == 1 and lut[-1] == 59


def test_cli_evaluate(voc_root, tiny_clip, tiny_model_name, tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_clip.state_dict(), ckpt)
    out = tmp_path / "eval"
    code = main(["evaluate", "--data", f"voc20={voc_root}", "--protocol", "naclip",
                 "--model", tiny_model_name, "--checkpoint", str(ckpt), "--device", "cpu",
                 "--short-side", "32", "--crop", "32", "--stride", "16", "--limit", "1",
                 "--names", "plain", "-o", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data[0]["method"] == "naclip" and data[0]["num_images"] == 1
    assert data[0]["names"] == "plain" and data[0]["config"]["crop"] == 32
    assert "| naclip |" in capsys.readouterr().out
    assert main(["evaluate", "--data", "voc99=/x"]) == 2
