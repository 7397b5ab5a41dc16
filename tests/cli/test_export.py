"""``clipseg export``: a reviewed drafts folder as COCO, masks and YOLO-seg (issue 10, part 4).

The drafts folders are made the real way: ``clipseg batch`` with the tiny test model writes
them, and :class:`napari_clipseg.review.series.ReviewSeries` (the review widget's folder model,
no Qt) saves a person's corrections and review states into them. The corrected labels are
drawn here (two red discs, a red speck, a green and a blue block) so that what the export
writes can be checked pixel by pixel.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseg import atomic
from clipseg.apps.batch_instances import InstanceOptions
from clipseg.apps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from clipseg.apps.export import LIST_LIMIT, MANIFEST
from clipseg.formats import io
from clipseg.formats.coco import rle_decode
from clipseg.formats.review import DRAFT, REVIEWED, SKIPPED
from napari_clipseg.review.series import ReviewSeries
from tests.cli.conftest import save, scene

CLASSES = "red, green, blue"
SHAPE = (40, 52)  # scene()'s size


def _model(tiny_files) -> list[str]:
    return ["--model", tiny_files["name"], "--checkpoint", str(tiny_files["weights"]),
            "--model-config", str(tiny_files["config"]), "--device", "cpu",
            "--short-side", "48", "--quiet"]


def _disc(center, radius, shape=SHAPE):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def corrected(shift: int = 0) -> np.ndarray:
    """What a reviewer leaves: red discs + a 4-pixel red speck, a green and a blue block."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[25:40, 0:20] = 2                        # green
    lab[0:12, 30 + shift:52] = 3                # blue
    lab[_disc((10, 10 + shift), 7)] = 1         # red object 1
    lab[_disc((28, 38), 8)] = 1                 # red object 2
    lab[0:2, 22:24] = 1                         # red speck (4 pixels)
    return lab


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_files):
    """images/im0..im2.png and drafts/ from `clipseg batch --instances red`, made once."""
    root = tmp_path_factory.mktemp("export-src")
    for i in range(3):
        save(root / "images" / f"im{i}.png", scene(i))
    code = main(["batch", str(root / "images"), "--classes", CLASSES, "-o",
                 str(root / "drafts"), "--instances", "red", *_model(tiny_files)])
    assert code == EXIT_OK
    return root


@pytest.fixture
def src(made, tmp_path):
    """A private copy of the made folders: (images, drafts)."""
    shutil.copytree(made / "drafts", tmp_path / "drafts")
    shutil.copytree(made / "images", tmp_path / "images")
    return tmp_path / "images", tmp_path / "drafts"


def review(images, drafts, name, state=REVIEWED, labels=None, instances=None):
    """Save image ``name`` as the review widget does (its labels, or ``labels``) in ``state``."""
    series = ReviewSeries(images, drafts)
    index = series.find(name)
    loaded = series.load(index)
    series.save(index, loaded.labels if labels is None else labels, loaded.edits, state,
                meta=loaded.meta, instances=instances)


def review_all(images, drafts, state=REVIEWED, **kw):
    for i in range(3):
        review(images, drafts, f"im{i}", state, labels=corrected(i), **kw)


def export(capsys, drafts, out, *flags):
    capsys.readouterr()
    code = main(["export", str(drafts), "-o", str(out), *map(str, flags)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def components(mask):
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    return [lab == k for k in range(1, int(lab.max()) + 1)]


def coco_masks(doc, decode):
    """``{(file_name, category name): [mask, ...]}`` of a COCO document."""
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: im for im in doc["images"]}
    out: dict = {}
    for ann in doc["annotations"]:
        im = files[ann["image_id"]]
        mask = decode(ann["segmentation"])
        assert mask.shape == (im["height"], im["width"])
        assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]
        out.setdefault((im["file_name"], names[ann["category_id"]]), []).append(mask)
    return out


# --------------------------------------------------------------------------------------------
# review states: refusal, --include-drafts, skipped
# --------------------------------------------------------------------------------------------
def test_drafts_make_it_refuse_listing_them(src, tmp_path, capsys):
    images, drafts = src
    review(images, drafts, "im0")
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_USAGE
    assert "2 not reviewed (drafts): im1, im2." in err and "--include-drafts" in err
    assert "im0" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_refusal_lists_the_first_drafts_and_counts_the_rest(src, tmp_path, capsys):
    _, drafts = src
    for k in range(LIST_LIMIT + 3):  # more drafts: copies of im1's result under other names
        for suffix in (".png", ".clipseg.json"):
            shutil.copy(drafts / f"im1{suffix}", drafts / f"x{k:02d}{suffix}")
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_USAGE
    total = LIST_LIMIT + 3 + 3
    names = sorted(["im0", "im1", "im2"] + [f"x{k:02d}" for k in range(LIST_LIMIT + 3)])
    assert f"got {total} not reviewed" in err
    assert ", ".join(names[:LIST_LIMIT]) + f" and {total - LIST_LIMIT} more." in err
    assert names[LIST_LIMIT] not in err


def test_include_drafts_exports_them_and_skipped_images_never(src, tmp_path, capsys):
    images, drafts = src
    review(images, drafts, "im0", REVIEWED, labels=corrected())
    review(images, drafts, "im1", SKIPPED)
    code, err = export(capsys, drafts, tmp_path / "out", "--include-drafts", "--format",
                       "coco", "masks", "yolo")
    assert code == EXIT_OK, err
    assert "1 drafts (not reviewed) exported" in err and "1 skipped" in err
    doc = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["im0.png", "im2.png"]
    assert not (tmp_path / "out" / "masks" / "im1.png").exists()
    assert not (tmp_path / "out" / "labels" / "im1.txt").exists()
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert (manifest["images"], manifest["drafts_included"], manifest["skipped"]) == \
        (["im0", "im2"], ["im2"], ["im1"])
    # the draft went out as batch wrote it
    draft, _ = io.read_labels(drafts / "im2")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / "im2.png")),
                          draft)

    # once im2 is reviewed too, no flag is needed; skipped im1 still stays out
    review(images, drafts, "im2", REVIEWED)
    code, err = export(capsys, drafts, tmp_path / "out2")
    assert code == EXIT_OK, err
    doc = json.loads((tmp_path / "out2" / "coco.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["im0.png", "im2.png"]
    assert json.loads((tmp_path / "out2" / MANIFEST).read_text())["drafts_included"] == []


def test_a_folder_of_skipped_images_only_is_refused(src, tmp_path, capsys):
    images, drafts = src
    for i in range(3):
        review(images, drafts, f"im{i}", SKIPPED)
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_USAGE and "at least one reviewed image" in err and "3 skipped" in err


# --------------------------------------------------------------------------------------------
# COCO, read back
# --------------------------------------------------------------------------------------------
def _check_coco(out, decode):
    sem = json.loads((out / "coco.json").read_text())
    inst = json.loads((out / "coco_instances.json").read_text())
    assert [c["name"] for c in sem["categories"]] == ["red", "green", "blue"]
    assert [(c["id"], c["name"]) for c in inst["categories"]] == [(1, "red")]
    got_sem, got_inst = coco_masks(sem, decode), coco_masks(inst, decode)
    want_sem, want_inst = {}, {}
    for i in range(3):
        lab = corrected(i)
        for k, name in enumerate(["red", "green", "blue"], start=1):
            want_sem[(f"im{i}.png", name)] = [lab == k]
        want_inst[(f"im{i}.png", "red")] = components(lab == 1)
    assert got_sem.keys() == want_sem.keys()
    for key, masks in want_sem.items():
        assert np.array_equal(got_sem[key][0], masks[0]), key
    assert got_inst.keys() == want_inst.keys()
    for key, masks in want_inst.items():
        # objects in raster order of their first pixel (column-major RLE does not change that)
        assert len(got_inst[key]) == len(masks) == 3, key
        for got, want in zip(sorted(got_inst[key], key=_first), sorted(masks, key=_first)):
            assert np.array_equal(got, want), key


def _first(mask):
    return int(np.flatnonzero(mask.ravel())[0])


def test_coco_semantic_and_instances_decode_to_the_reviewed_labels(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "coco")
    assert code == EXIT_OK, err
    assert "9 instance objects" in err
    _check_coco(tmp_path / "out", rle_decode)
    # COCO was asked for alone: no masks/ folder, and no temporary one left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted(["coco.json", "coco_instances.json", MANIFEST])


def test_coco_reads_back_with_pycocotools(src, tmp_path, capsys):
    mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools is in the test extra")
    images, drafts = src
    review_all(images, drafts)
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_OK, err

    def decode(seg):
        return mask_api.decode({"size": seg["size"], "counts": seg["counts"].encode()}) > 0

    _check_coco(tmp_path / "out", decode)


def test_instances_at_export_time_with_min_area(src, tmp_path, capsys):
    images, drafts = src
    for i in range(3):  # labels corrected after batch's split: the instance files are stale
        review(images, drafts, f"im{i}", labels=corrected(i))
    for side in drafts.glob("*.clipseg.json"):  # and drafts made without --instances
        meta = json.loads(side.read_text())
        meta.pop("instances")
        side.write_text(json.dumps(meta))
    code, err = export(capsys, drafts, tmp_path / "out", "--instances", "RED", "--min-area",
                       "5")
    assert code == EXIT_OK, err
    inst = json.loads((tmp_path / "out" / "coco_instances.json").read_text())
    got = coco_masks(inst, rle_decode)
    for i in range(3):  # the 4-pixel speck is below --min-area
        discs = [m for m in components(corrected(i) == 1) if m.sum() >= 5]
        assert len(discs) == 2
        assert sorted(map(_first, got[(f"im{i}.png", "red")])) == sorted(map(_first, discs))
    code, err = export(capsys, drafts, tmp_path / "out2", "--instances", "sky")
    assert code == EXIT_USAGE and "expected names among the classes (red, green, blue)" in err


# --------------------------------------------------------------------------------------------
# instance files: used while they match the labels, split again when a person edited them
# --------------------------------------------------------------------------------------------
def test_instance_file_is_used_while_its_labels_match_and_resplit_after_an_edit(
        src, tmp_path, capsys):
    images, drafts = src
    lab = corrected()
    objects = np.zeros(SHAPE, np.uint32)
    objects[lab == 1] = 1                      # a person's call: the two discs are one object
    objects[0:2, 22:24] = 2                    # and the speck another
    review(images, drafts, "im0", labels=lab,
           instances=(objects, InstanceOptions(("red",), min_area=0)))
    for i in (1, 2):
        review(images, drafts, f"im{i}", SKIPPED)
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_OK, err
    got = coco_masks(json.loads((tmp_path / "out" / "coco_instances.json").read_text()),
                     rle_decode)[("im0.png", "red")]
    assert sorted(int(m.sum()) for m in got) == sorted([4, int((lab == 1).sum()) - 4])
    assert "split again" not in err

    # the reviewer then removes the speck; the sidecar keeps the (now stale) instance entry
    edited = lab.copy()
    edited[0:2, 22:24] = 0
    review(images, drafts, "im0", labels=edited)
    entry = io.read_sidecar(drafts / "im0")["instances"]
    assert entry["file"] == "im0.instances.tif"
    code, err = export(capsys, drafts, tmp_path / "out2")
    assert code == EXIT_OK, err
    assert "1 images had instance files older than their corrected labels" in err
    got = coco_masks(json.loads((tmp_path / "out2" / "coco_instances.json").read_text()),
                     rle_decode)[("im0.png", "red")]
    want = components(edited == 1)
    assert len(got) == len(want) == 2
    for g in got:
        assert any(np.array_equal(g, w) for w in want)


# --------------------------------------------------------------------------------------------
# masks and YOLO
# --------------------------------------------------------------------------------------------
def test_masks_are_the_merged_labels_and_the_objects(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "masks")
    assert code == EXIT_OK, err
    masks = tmp_path / "out" / "masks"
    table = json.loads((masks / "classes.json").read_text())["classes"]
    assert [(c["label"], c["name"]) for c in table] == [(1, "red"), (2, "green"), (3, "blue")]
    for i in range(3):
        with Image.open(masks / f"im{i}.png") as img:
            assert np.array_equal(np.asarray(img), corrected(i))
        with Image.open(masks / f"im{i}.instances.png") as img:
            objects = np.asarray(img)
        owner = json.loads((masks / f"im{i}.instances.json").read_text())["class_of_id"]
        assert owner == [0, 1, 1, 1]
        assert sorted(map(_first, (objects == k for k in (1, 2, 3)))) == \
            sorted(map(_first, components(corrected(i) == 1)))
    assert not (tmp_path / "out" / "coco.json").exists()


def test_more_than_65535_objects_go_to_a_uint32_tiff(tmp_path, tiny_files, capsys):
    side = 520  # one isolated red pixel at every (even, even) place: 260 * 260 = 67600 objects
    save(tmp_path / "images" / "dots.png", np.zeros((side, side, 3), np.uint8))
    assert main(["batch", str(tmp_path / "images"), "--classes", CLASSES, "-o",
                 str(tmp_path / "drafts"), *_model(tiny_files)]) == EXIT_OK
    lab = np.zeros((side, side), np.uint8)
    lab[::2, ::2] = 1
    review(tmp_path / "images", tmp_path / "drafts", "dots", labels=lab)
    code, err = export(capsys, tmp_path / "drafts", tmp_path / "out", "--format", "masks",
                       "--instances", "red")
    assert code == EXIT_OK, err
    import tifffile

    objects = tifffile.imread(tmp_path / "out" / "masks" / "dots.instances.tif")
    assert objects.dtype == np.uint32 and int(objects.max()) == 260 * 260
    assert np.array_equal(objects > 0, lab == 1)
    assert np.unique(objects[lab == 1]).size == 260 * 260  # one id per dot
    with Image.open(tmp_path / "out" / "masks" / "dots.png") as img:
        assert np.array_equal(np.asarray(img), lab)


def _yolo(out):
    import yaml

    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    files = {}
    for path in sorted((out / "labels").rglob("*.txt")):
        lines = []
        for line in path.read_text().splitlines():
            cls, *coords = line.split()
            xy = np.asarray(coords, float).reshape(-1, 2)
            lines.append((int(cls), xy))
        files[path.relative_to(out / "labels").with_suffix("").as_posix()] = lines
    return names, files


def _rasterise(xy, shape):
    from skimage.draw import polygon

    mask = np.zeros(shape, bool)
    # x, y are fractions of the width/height; pixel (r, c) covers [r, r+1) x [c, c+1)
    rr, cc = polygon(xy[:, 1] * shape[0] - 0.5, xy[:, 0] * shape[1] - 0.5, shape)
    mask[rr, cc] = True
    return mask


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_yolo_lines_are_normalised_polygons_of_the_objects(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "yolo", "--instances",
                       "red")
    assert code == EXIT_OK, err
    names, files = _yolo(tmp_path / "out")
    assert names == {0: "red", 1: "green", 2: "blue"}
    assert sorted(files) == ["im0", "im1", "im2"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["labels", "data.yaml", MANIFEST])  # YOLO alone: no masks, no scratch copy
    for i in range(3):
        lab = corrected(i)
        lines = files[f"im{i}"]
        assert sorted(c for c, _ in lines) == [0, 0, 0, 1, 2]  # 3 red objects, green, blue
        for cls, xy in lines:
            assert len(xy) >= 3 and ((xy >= 0) & (xy <= 1)).all()
            drawn = _rasterise(xy, SHAPE)
            regions = components(lab == cls + 1)
            best = max(regions, key=lambda r: _iou(drawn, r))
            # The polygon runs through the midpoints of the edges between the region's boundary
            # pixels and the outside (find_contours at 0.5, only collinear points dropped), so
            # filled by pixel centres it gives the region back exactly: IoU 1, the 4-pixel speck
            # included. Only holes (YOLO has none) or pieces touching at a corner alone would
            # differ, and these regions have neither.
            assert np.array_equal(drawn, best), (i, cls, _iou(drawn, best))


def test_yolo_follows_the_split_recorded_with_the_instance_file(src, tmp_path, capsys):
    images, drafts = src
    lab = np.zeros(SHAPE, np.uint8)
    lab[25:40, 0:20] = 2
    lab[0:2, 22:24] = 1  # only the 4-pixel red speck, below the split's min_area of 5
    objects = np.zeros(SHAPE, np.uint32)
    review(images, drafts, "im0", labels=lab,
           instances=(objects, InstanceOptions(("red",), min_area=5)))
    for i in (1, 2):
        review(images, drafts, f"im{i}", SKIPPED)
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "yolo")
    assert code == EXIT_OK, err
    _, files = _yolo(tmp_path / "out")
    assert [c for c, _ in files["im0"]] == [1]  # green; red is a thing with no object left


def test_yolo_names_follow_the_images_and_a_shared_stem_is_reported(tmp_path, tiny_files,
                                                                    capsys):
    images = tmp_path / "images"
    save(images / "c.png", scene(0))
    save(images / "c.webp", scene(1))   # batch names the drafts c_png and c_webp
    save(images / "sub" / "d.png", scene(2))
    drafts = tmp_path / "drafts"
    assert main(["batch", str(images), "--classes", CLASSES, "-o", str(drafts),
                 *_model(tiny_files)]) == EXIT_OK
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "yolo",
                       "--include-drafts")
    assert code == EXIT_OK, err
    assert "c.webp and c.png share the name c" in err and "labels/c_webp.txt" in err
    _, files = _yolo(tmp_path / "out")
    assert sorted(files) == ["c", "c_webp", "sub/d"]


# --------------------------------------------------------------------------------------------
# class tables that differ between sidecars
# --------------------------------------------------------------------------------------------
def test_differing_class_tables_are_merged_by_name_with_a_warning(made, tmp_path, tiny_files,
                                                                   capsys):
    images_b = tmp_path / "images_b"
    for i in range(2):
        save(images_b / f"b{i}.png", scene(10 + i))
    drafts = tmp_path / "drafts"
    shutil.copytree(made / "drafts", drafts / "a")
    assert main(["batch", str(images_b), "--classes", "blue, sky, red", "-o", str(drafts / "b"),
                 *_model(tiny_files)]) == EXIT_OK
    for i in range(3):
        review(made / "images", drafts / "a", f"im{i}", labels=corrected(i))
    local = corrected()  # in b's numbering: 1 blue, 2 sky, 3 red
    for i in range(2):
        review(images_b, drafts / "b", f"b{i}", labels=local)
    code, err = export(capsys, drafts, tmp_path / "out", "--format", "masks", "coco")
    assert code == EXIT_OK, err
    assert "warning: 2 sidecars (b/b0, b/b1) name the classes [blue, sky, red], not [red, " \
        "green, blue]" in err
    assert "remapped by name into one table: blue=3, sky=4, red=1" in err
    table = json.loads((tmp_path / "out" / "masks" / "classes.json").read_text())["classes"]
    assert [(c["label"], c["name"]) for c in table] == [(1, "red"), (2, "green"), (3, "blue"),
                                                        (4, "sky")]
    lut = np.array([0, 3, 4, 1])
    for i in range(2):
        with Image.open(tmp_path / "out" / "masks" / "b" / f"b{i}.png") as img:
            assert np.array_equal(np.asarray(img), lut[local])
    with Image.open(tmp_path / "out" / "masks" / "a" / "im1.png") as img:
        assert np.array_equal(np.asarray(img), corrected(1))  # the first table is unchanged
    doc = json.loads((tmp_path / "out" / "coco.json").read_text())
    got = coco_masks(doc, rle_decode)
    assert np.array_equal(got[("b0.png", "sky")][0], local == 2)
    assert np.array_equal(got[("b0.png", "red")][0], local == 3)

    # the same tables: no warning about them
    code, err = export(capsys, drafts / "a", tmp_path / "out_a")
    assert code == EXIT_OK and "name the classes" not in err and "remapped" not in err


# --------------------------------------------------------------------------------------------
# the output folder
# --------------------------------------------------------------------------------------------
def test_out_must_be_new_or_empty_unless_overwrite(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    out = tmp_path / "out"
    out.mkdir()
    assert export(capsys, drafts, out)[0] == EXIT_OK  # an empty folder is fine
    code, err = export(capsys, drafts, out)
    assert code == EXIT_USAGE and "pass --overwrite" in err


def test_overwrite_removes_only_what_the_previous_export_listed(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    out = tmp_path / "out"
    assert export(capsys, drafts, out, "--format", "coco", "masks", "yolo")[0] == EXIT_OK
    before = json.loads((out / MANIFEST).read_text())["files"]
    assert "labels/im0.txt" in before and "masks/im0.png" in before
    (out / "notes.txt").write_text("mine")
    (out / "masks" / "mine.png").write_bytes(b"mine")
    # a manifest edited to name files outside OUT does not make the export remove them
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"] += ["../outside.txt", str(tmp_path / "abs.txt")]
    (out / MANIFEST).write_text(json.dumps(doc))
    for name in ("outside.txt", "abs.txt"):
        (tmp_path / name).write_text("not the export's")
    code, err = export(capsys, drafts, out, "--format", "coco", "--overwrite")
    assert code == EXIT_OK, err
    now = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert now == sorted(["coco.json", "coco_instances.json", MANIFEST, "notes.txt",
                          "masks/mine.png"])
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "labels").exists()  # emptied by the removal, so removed too
    assert (tmp_path / "outside.txt").is_file() and (tmp_path / "abs.txt").is_file()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_out_overlapping_the_drafts_folder_is_refused(src, tmp_path, capsys, where):
    images, drafts = src
    review_all(images, drafts)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = {"same": drafts, "inside": drafts / "export", "around": tmp_path}[where]
    code, err = export(capsys, drafts, out, "--overwrite")
    assert code == EXIT_USAGE and "apart from the drafts folder" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_manifest_lists_every_file_and_is_written_last(src, tmp_path, capsys, monkeypatch):
    images, drafts = src
    review_all(images, drafts)
    real = atomic.atomic_path
    order = []

    @contextmanager
    def recording(path):
        with real(path) as tmp:
            yield tmp
        order.append(Path(path).resolve())

    monkeypatch.setattr(atomic, "atomic_path", recording)
    out = tmp_path / "out"
    code, err = export(capsys, drafts, out, "--format", "coco", "masks", "yolo")
    assert code == EXIT_OK, err
    assert order[-1] == (out / MANIFEST).resolve()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(listed + [MANIFEST]) == files
    assert sorted(p.relative_to(out.resolve()).as_posix() for p in order[:-1]
                  if ".clipseg-export-tmp" not in p.parts) == sorted(listed)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(src, tmp_path, capsys, umask, file_mode, dir_mode):
    images, drafts = src
    review_all(images, drafts)
    old = os.umask(umask)
    try:
        code, err = export(capsys, drafts, tmp_path / "out", "--format", "coco", "masks",
                           "yolo")
    finally:
        os.umask(old)
    assert code == EXIT_OK, err
    paths = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    want = {str(p.relative_to(tmp_path)): dir_mode if p.is_dir() else file_mode for p in paths}
    assert modes == want and len(modes) > 10


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_unreadable_results_are_left_out_with_the_reason(tmp_path, tiny_files, capsys):
    images = tmp_path / "images"
    for i in range(4):
        save(images / f"im{i}.png", scene(i))
    drafts = tmp_path / "drafts"
    assert main(["batch", str(images), "--classes", CLASSES, "-o", str(drafts),
                 *_model(tiny_files)]) == EXIT_OK
    save(images / "im1.png", scene(1, (30, 30)))               # the image changed since
    (drafts / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 9)  # corrupt labels
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(drafts / "im3.png")  # not the sidecar's
    code, err = export(capsys, drafts, tmp_path / "out", "--include-drafts")
    assert code == EXIT_FAILED
    assert "not exported: im1: its labels are 40x52 but its image" in err
    assert "is 30x30; re-run `clipseg batch`" in err
    assert "not exported: im2: expected readable label files, got" in err
    assert "expected labels of shape [40, 52] (sidecar), got (10, 10)" in err
    assert "3 results could not be read and were left out" in err
    doc = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["im0.png"]
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["left_out"] == ["im1", "im2", "im3"] and manifest["images"] == ["im0"]


def test_a_corrupt_sidecar_or_a_bad_review_state_is_refused(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    meta = json.loads((drafts / "im1.clipseg.json").read_text())
    meta["review"] = {"state": "done"}
    (drafts / "im1.clipseg.json").write_text(json.dumps(meta))
    (drafts / "im2.clipseg.json").write_text("{not json")
    code, err = export(capsys, drafts, tmp_path / "out")
    assert code == EXIT_USAGE
    assert "2 that are not" in err and "im1: sidecar 'review'" in err and "im2:" in err
    assert not (tmp_path / "out").exists()


def test_bad_command_lines_exit_2(src, tmp_path, capsys):
    images, drafts = src
    review_all(images, drafts)
    code, err = export(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert code == EXIT_USAGE and "which is not a folder" in err
    code, err = export(capsys, drafts, tmp_path / "out", "--min-area", "3")
    assert code == EXIT_USAGE and "--min-area/--watershed: expected --instances" in err
    code, err = export(capsys, images, tmp_path / "out")
    assert code == EXIT_USAGE and "found none" in err
    (tmp_path / "file").write_text("x")
    code, err = export(capsys, drafts, tmp_path / "file")
    assert code == EXIT_USAGE and "expected a folder, got a file" in err


def test_a_real_export_imports_neither_torch_nor_open_clip(src, tmp_path):
    import sys

    from tests.cli.conftest import main_in_fresh_python

    images, drafts = src
    review_all(images, drafts)
    argv = ["export", str(drafts), "-o", str(tmp_path / "out"), "--format", "coco", "masks",
            "yolo", "--instances", "red"]
    out, err = main_in_fresh_python(argv, env={**os.environ,
                                               "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "HEAVY []" in out and "RC 0" in out, out + err


def test_review_states_are_what_the_export_reads(src):
    from clipseg.formats.review import review_state

    images, drafts = src
    assert review_state(io.read_sidecar(drafts / "im0")) == DRAFT  # batch wrote a draft
    review(images, drafts, "im0", SKIPPED)
    assert review_state(io.read_sidecar(drafts / "im0")) == SKIPPED
