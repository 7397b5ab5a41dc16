"""The review's folder model (no Qt): listing, names, states, class merge, saving."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseg.errors import InvalidInputError
from clipseg.formats import io
from clipseg.formats.review import DRAFT, REVIEWED, SKIPPED, review_state
from napari_clipseg.review.series import NO_DRAFT, ReviewSeries, ShapeMismatch, list_images

CLASSES = "red circle, blue square, stripes, dots"
N_IMAGES = 5


def make_images(folder: Path, n: int = N_IMAGES, size: tuple[int, int] = (64, 64)) -> list[Path]:
    """``n`` synthetic scenes (clipseg.apps.synthetic) as s0.png ... in ``folder``."""
    from clipseg.apps.synthetic import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        scene = make_scene(1_000_000 + i, size)
        path = folder / f"s{i}.png"
        Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def batch_drafts(images: Path, drafts: Path, classes: str = CLASSES) -> None:
    """Drafts made the way a user makes them: `clipseg batch` with the bundled demo model."""
    from clipseg.apps.cli import main
    from clipseg.models.bundled import BUNDLED_ARCH

    rc = main(["batch", str(images), "--classes", classes, "-o", str(drafts), "--model",
               BUNDLED_ARCH, "--device", "cpu", "--quiet"])
    assert rc == 0


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review-dataset")
    make_images(root / "images")
    batch_drafts(root / "images", root / "drafts")
    return root / "images", root / "drafts"


@pytest.fixture
def dataset(pristine, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the 5 images and their batch drafts."""
    images, drafts = pristine
    shutil.copytree(images, tmp_path / "images")
    shutil.copytree(drafts, tmp_path / "drafts")
    return tmp_path / "images", tmp_path / "drafts"


def test_listing_names_match_the_batch_and_skip_non_images(tmp_path):
    from clipseg.apps.jobs import discover

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "a.png", "c.tif", ".hidden.png", "notes.txt", "x.edits.png"):
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"")
    items = list_images(folder, tmp_path / "out", recursive=False)
    assert [i.name for i in items] == ["a.jpg", "a.png", "b.png", "c.tif"]
    assert [i.base.name for i in items] == ["a_jpg", "a_png", "b", "c"]
    # the same output names as `clipseg batch` (x.edits.png aside: batch would take it)
    (folder / "x.edits.png").unlink()
    (folder / ".hidden.png").unlink()
    jobs = discover([folder], tmp_path / "out", recursive=False, walk=True)
    assert [j.base.name for j in jobs] == [i.base.name for i in items]


def test_recursive_listing_matches_batch_recursive_and_leaves_the_drafts_folder_out(tmp_path):
    from clipseg.apps.jobs import discover

    folder = tmp_path / "in"
    for name in ("top.png", "sub/a.jpg", "sub/a.png", "sub/deeper/b.tif", ".git/x.png",
                 "sub/.hidden/y.png", "drafts/top.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    drafts = folder / "drafts"  # the drafts folder inside the image folder: not listed
    flat = list_images(folder, drafts, recursive=False)
    assert [i.name for i in flat] == ["top.png"]
    items = list_images(folder, drafts)
    assert [i.name for i in items] == ["sub/a.jpg", "sub/a.png", "sub/deeper/b.tif", "top.png"]
    assert [i.base.relative_to(drafts).as_posix() for i in items] == \
        ["sub/a_jpg", "sub/a_png", "sub/deeper/b", "top"]
    assert items[2].image == folder / "sub" / "deeper" / "b.tif"
    # `clipseg batch` (recursive by default) writes its drafts under the same names
    shutil.rmtree(folder / ".git")
    shutil.rmtree(folder / "sub" / ".hidden")
    jobs = discover([folder], drafts, recursive=True, walk=True)
    assert sorted(j.base.relative_to(drafts).as_posix() for j in jobs) == \
        sorted(i.base.relative_to(drafts).as_posix() for i in items)


def test_a_recursive_series_loads_and_saves_drafts_in_their_subfolders(tmp_path):
    from clipseg.apps.cli import main
    from clipseg.models.bundled import BUNDLED_ARCH

    images, drafts = tmp_path / "images", tmp_path / "drafts"
    make_images(images / "plate1", 2)
    make_images(images / "plate2", 1)
    assert main(["batch", str(images), "--classes", CLASSES, "-o", str(drafts),
                 "--model", BUNDLED_ARCH, "--device", "cpu", "--quiet"]) == 0
    assert len(ReviewSeries(images, drafts, recursive=False)) == 0  # none at the top level
    series = ReviewSeries(images, drafts)
    assert [i.name for i in series.items] == ["plate1/s0.png", "plate1/s1.png", "plate2/s0.png"]
    loaded = series.load(2)
    assert loaded.labels is not None, "the batch's draft in drafts/plate2/ is found"
    assert series.state(2) == DRAFT
    corrected = loaded.labels.copy()
    corrected[:8, :8] = 1
    written = series.save(2, corrected, None, REVIEWED, meta=loaded.meta)
    assert drafts / "plate2" / "s0.clipseg.json" in written
    again = ReviewSeries(images, drafts)
    assert again.state(2) == REVIEWED and again.resume_index() == 0
    np.testing.assert_array_equal(again.load(2).labels, corrected)


def test_find_by_position_name_and_prefix(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("cat1.png", "cat2.png", "dog.png"):
        (folder / name).write_bytes(b"")
    series = ReviewSeries(folder, tmp_path / "drafts")
    assert series.find("2") == 1
    assert series.find("dog.png") == 2 and series.find("dog") == 2 and series.find("d") == 2
    with pytest.raises(InvalidInputError, match="matches 2 images"):
        series.find("cat")
    with pytest.raises(InvalidInputError, match="1..3"):
        series.find("7")
    with pytest.raises(InvalidInputError, match="no image called"):
        series.find("bird")


def test_drafts_folder_must_differ_from_the_images(tmp_path):
    with pytest.raises(InvalidInputError, match="other than the image folder"):
        ReviewSeries(tmp_path, tmp_path)


def test_states_resume_and_progress(dataset):
    images, drafts = dataset
    series = ReviewSeries(images, drafts)
    assert len(series) == N_IMAGES and series.writable
    assert series.resume_index() == 0
    for i, state in ((0, REVIEWED), (1, SKIPPED), (3, REVIEWED)):
        loaded = series.load(i)
        series.save(i, loaded.labels, loaded.edits, state, meta=loaded.meta)
    again = ReviewSeries(images, drafts)  # a restart reads the states from the sidecars
    assert again.resume_index() == 2
    assert "counting" in again.progress_text()  # only 3 sidecars read so far
    assert again.scan(2) is False and again.scan(100) is True
    assert again.progress_text() == f"2 of {N_IMAGES} reviewed, 1 skipped"
    assert again.next_open(2) == 4 and again.next_open(4) is None
    assert [again.state(i) for i in range(N_IMAGES)] == [REVIEWED, SKIPPED, DRAFT, REVIEWED,
                                                        DRAFT]


def test_save_round_trips_labels_edits_and_keeps_the_batch_hash(dataset):
    images, drafts = dataset
    before = json.loads((drafts / "s2.clipseg.json").read_text())
    series = ReviewSeries(images, drafts)
    loaded = series.load(2)
    labels = loaded.labels.copy()
    labels[10:20, 10:30] = 2
    edits = np.zeros_like(loaded.edits)
    edits[10:20, 10:30] = True
    written = series.save(2, labels, edits, REVIEWED, meta=loaded.meta)
    assert {p.name for p in written} == {"s2.png", "s2.edits.png", "s2.clipseg.json"}
    back, meta = io.read_labels(drafts / "s2")
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(meta["edits"], edits)
    assert review_state(meta) == REVIEWED
    assert meta["model"] == before["model"] and meta["config"] == before["config"]
    # same classes and options: a resumed `clipseg batch` sees it as done, never redoes it
    assert meta["config_hash"] == before["config_hash"]
    assert (images / "s2.png").stat().st_size > 0  # the image itself untouched
    assert not list(drafts.glob(".*.part"))


def test_an_image_without_a_draft(dataset):
    images, drafts = dataset
    for f in drafts.glob("s4.*"):
        f.unlink()
    series = ReviewSeries(images, drafts)
    assert series.state(4) == NO_DRAFT and not series.has_draft(4)
    loaded = series.load(4)
    assert loaded.labels is None and loaded.image.shape[:2] == (64, 64)


def test_mixed_class_lists_are_merged_by_name_with_a_warning(dataset):
    images, drafts = dataset
    # s1's sidecar lists the classes in another order and with one more: relabel the file
    labels, meta = io.read_labels(drafts / "s1")
    names = [c["name"] for c in meta["classes"]]
    order = [names[2], names[0], "yellow circle", names[1], names[3]]
    new_label = {i + 1: order.index(n) + 1 for i, n in enumerate(names)}
    relabelled = np.vectorize(lambda v: new_label.get(int(v), 0))(labels).astype(np.uint8)
    io.write_labels(drafts / "s1", relabelled, order, model=meta["model"],
                    config=meta["config"], image_info=meta["image"])
    series = ReviewSeries(images, drafts)
    first = series.load(0)
    assert first.warning == "" and series.table.names == names
    merged = series.load(1)
    assert series.table.names == names + ["yellow circle"]
    assert "yellow circle" in merged.warning and "remapped by name" in merged.warning
    np.testing.assert_array_equal(merged.labels, labels)  # back in the table's numbering
    assert merged.warning in series.warnings


def test_shape_mismatch_is_refused(dataset):
    images, drafts = dataset
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "s3.png")
    series = ReviewSeries(images, drafts)
    with pytest.raises(ShapeMismatch, match="40x50"):
        series.load(3)


def test_read_only_drafts_folder_is_detected_and_never_written(dataset):
    images, drafts = dataset
    os.chmod(drafts, 0o555)
    try:
        probe = None if os.geteuid() != 0 else (lambda p: os.stat(p).st_mode & 0o222 != 0)
        series = ReviewSeries(images, drafts, writable=probe)
        assert not series.writable
        loaded = series.load(0)
        with pytest.raises(InvalidInputError, match="read-only"):
            series.save(0, loaded.labels, loaded.edits, REVIEWED, meta=loaded.meta)
    finally:
        os.chmod(drafts, 0o755)
    assert review_state(io.read_sidecar(drafts / "s0")) == DRAFT


def test_folder_writable_tries_for_real(tmp_path):
    from napari_clipseg.review.series import folder_writable

    assert folder_writable(tmp_path)
    assert not folder_writable(tmp_path / "missing")
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind


def test_a_reviewed_microscopy_draft_keeps_its_pixel_size_and_channels(dataset):
    from clipseg.formats import ome

    images, drafts = dataset
    side = json.loads((drafts / "s1.clipseg.json").read_text())
    side["pixel_size"] = {"y": 0.4, "x": 0.325, "unit": "µm", "source": "ome-tiff"}
    side["channels"] = {"names": ["DAPI", "EGFP", "mCherry"], "given": "dyes"}
    (drafts / "s1.clipseg.json").write_text(json.dumps(side))
    series = ReviewSeries(images, drafts)
    loaded = series.load(1)
    written = series.save(1, loaded.labels, loaded.edits, REVIEWED, meta=loaded.meta)
    assert {p.name for p in written} == {"s1.tif", "s1.clipseg.json"}
    assert not (drafts / "s1.png").exists()
    meta = io.read_sidecar(drafts / "s1")
    assert meta["pixel_size"] == side["pixel_size"] and meta["channels"] == side["channels"]
    info = ome.read_spatial(drafts / "s1.tif")
    assert (info.y, info.x) == pytest.approx((0.4, 0.325))
    np.testing.assert_array_equal(io.read_labels(drafts / "s1")[0], loaded.labels)
