"""``clipseg segment`` end to end with a random-weights checkpoint loaded from disk."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import tifffile

from clipseg.apps.cli import EXIT_OK, EXIT_USAGE, main
from clipseg.config import SegmentConfig
from clipseg.formats import coco, io
from clipseg.pipeline import Segmenter
from clipseg.resolve import resolve_config
from clipseg.text import parse_classes
from tests.cli.conftest import save, scene

CLASSES = "red thing; crimson blob, green field, sky"


def test_segment_writes_labels_sidecars_scores_and_coco(tmp_path, model_args, tiny_files):
    images = [save(tmp_path / "in" / f"im{i}.png", scene(i)) for i in range(2)]
    out = tmp_path / "out"
    code = main(["segment", *map(str, images), "--classes", CLASSES, "-o", str(out),
                 "--scores", "--tau", "5", *model_args])
    assert code == EXIT_OK
    config = SegmentConfig.from_flat(model=tiny_files["name"], device="cpu", short_side=48,
                                     checkpoint=str(tiny_files["weights"]), tau=5.0)
    reference = Segmenter(config)
    doc = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["red thing", "green field", "sky"]
    for i, path in enumerate(images):
        labels, meta = io.read_labels(out / f"im{i}.png")
        # the same run through the Python API, independently of the CLI
        expected = reference.segment(scene(i), parse_classes(CLASSES))
        np.testing.assert_array_equal(labels, expected.labels)
        assert meta["classes"][0]["synonyms"] == ["red thing", "crimson blob"]
        # the sidecar records what ran: the model's defaults filled in
        assert meta["config"] == resolve_config(config).to_flat()
        assert meta["config"]["crop"] == 32 and meta["config"]["middle_layer"] == 2
        assert meta["image"]["shape"] == list(scene(i).shape[:2])
        assert meta["image"]["path"] == str(path.resolve())
        scores = tifffile.imread(out / meta["scores"])
        assert scores.dtype == np.float16 and scores.shape == (3, *labels.shape)
        np.testing.assert_allclose(scores.astype(np.float32), expected.probs, atol=1e-3)
        # COCO: every annotation of this image decodes back to its label mask
        image_id = next(im["id"] for im in doc["images"] if im["file_name"] == f"im{i}.png")
        rebuilt = np.zeros_like(labels)
        for ann in doc["annotations"]:
            if ann["image_id"] == image_id:
                rebuilt[coco.rle_decode(ann["segmentation"])] = ann["category_id"]
        np.testing.assert_array_equal(rebuilt, labels)


def test_classes_file_with_newlines_and_synonyms(tmp_path, model_args):
    image = save(tmp_path / "a.png", scene(3))
    (tmp_path / "classes.txt").write_text("# classes.txt (a comment, as in the docs)\n"
                                          "road; street\nbuilding\n\n  # roads first\n"
                                          "tree, water\n")
    code = main(["segment", str(image), "--classes-file", str(tmp_path / "classes.txt"),
                 "-o", str(tmp_path / "out"), "--no-coco", *model_args])
    assert code == EXIT_OK
    _, meta = io.read_labels(tmp_path / "out" / "a")
    assert [c["name"] for c in meta["classes"]] == ["road", "building", "tree", "water"]
    assert meta["classes"][0]["synonyms"] == ["road", "street"]
    assert not (tmp_path / "out" / "coco.json").exists()


def test_missing_checkpoint_is_a_clear_usage_error(tmp_path, model_args, capsys):
    image = save(tmp_path / "a.png", scene(0))
    args = list(model_args)
    args[args.index("--checkpoint") + 1] = str(tmp_path / "nope.safetensors")
    code = main(["segment", str(image), "--classes", "a, b", "-o", str(tmp_path / "o"), *args])
    assert code == EXIT_USAGE
    assert "nope.safetensors" in capsys.readouterr().err


def test_untiled_image_over_max_pixels_fails_with_advice(tmp_path, model_args, capsys):
    image = save(tmp_path / "a.png", scene(0))
    code = main(["segment", str(image), "--classes", "a, b", "-o", str(tmp_path / "o"),
                 "--max-pixels", "100", *model_args])
    assert code == 2  # the only image cannot run: the options are at fault, nothing is run
    assert "--short-side" in capsys.readouterr().err


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "clipseg", "segment", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: clipseg segment" in proc.stdout and "--pamr-dilations" in proc.stdout


def test_demo_subcommand_writes_the_label_format(tmp_path):
    assert main(["demo", "-o", str(tmp_path), "--seed", "1"]) == EXIT_OK
    labels, meta = io.read_labels(tmp_path / "labels.clipseg.json")
    assert labels.shape == tuple(meta["image"]["shape"]) and len(np.unique(labels)) > 1
