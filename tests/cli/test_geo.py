"""GeoTIFF inputs through ``clipseg segment``/``batch``: georeferenced labels, scores, polygons."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tifffile

from clipseg.apps.cli import EXIT_OK, EXIT_USAGE, main
from clipseg.formats import geo, io
from tests.cli.conftest import save, scene
from tests.core.test_geo import ORIGIN, make_geotiff, tags_of

CLASSES = "red, green, dark"
NAMES = ["red", "green", "dark"]


def _native(model_args):
    args = list(model_args)
    args[args.index("--short-side") + 1] = "0"
    return args


def _geo_scene(path, size=(40, 52), **kwargs):
    image = scene(3, size)
    image[:6, -8:] = 0                     # a no-data corner (every band = GDAL_NODATA 0)
    return make_geotiff(path, image, **kwargs), image


def _check_tags(src, out):
    got, want = tags_of(out), tags_of(src)
    for code in geo.COPIED_TAGS:
        assert got.get(code) == want.get(code), geo.GEO_TAGS[code]


def _features_check(fc, labels, ref):
    """Classes, areas and the corner of a GeoJSON written for ``labels``."""
    assert {f["properties"]["class"] for f in fc["features"]} <= set(NAMES)
    assert {f["properties"]["class"] for f in fc["features"]} == \
        {NAMES[v - 1] for v in np.unique(labels) if v}
    for f in fc["features"]:
        assert f["properties"]["class"] == NAMES[f["properties"]["label"] - 1]
    assert sum(f["properties"]["area_px"] for f in fc["features"]) == int((labels > 0).sum())
    from shapely.geometry import shape

    area = sum(shape(f["geometry"]).area for f in fc["features"])
    assert area == pytest.approx((labels > 0).sum() * ref.pixel_area)
    # pixel (0, 0) is labelled: its top-left corner is the image's corner in world coordinates
    assert labels[0, 0] > 0
    corner = tuple(float(v) for v in ref.pixel_to_world(0, 0))
    first = [f for f in fc["features"] if f["properties"]["label"] == labels[0, 0]]
    points = {tuple(p) for f in first for ring in f["geometry"]["coordinates"] for p in ring}
    assert corner in points


def test_geotiff_labels_and_scores_keep_the_georeferencing(tmp_path, model_args):
    src, image = _geo_scene(tmp_path / "scene.tif")
    before = src.read_bytes()
    out = tmp_path / "out"
    vec = tmp_path / "scene-polygons.geojson"
    assert main(["segment", str(src), "--classes", CLASSES, "-o", str(out), "--scores",
                 "--vector", str(vec), *model_args]) == EXIT_OK
    labels, meta = io.read_labels(out / "scene")
    assert meta["file"] == "scene.tif"          # 3 classes would fit a PNG: a GeoTIFF instead
    assert labels.shape == image.shape[:2]      # working size 48 px, labels at input size
    _check_tags(src, out / "scene.tif")
    assert tags_of(out / "scene.tif")[42113] == "0"
    assert (labels[:6, -8:] == 0).all() and (labels[6:] > 0).all()  # no-data -> unlabeled
    _check_tags(src, out / "scene.scores.tif")
    with tifffile.TiffFile(out / "scene.scores.tif") as tif:
        assert len(tif.pages) == 1 and tif.pages[0].samplesperpixel == 3   # K bands, one page
        assert 42113 not in tif.pages[0].tags
        assert tif.series[0].shape == (3, *image.shape[:2])
    ref = geo.read_georeference(src)
    assert meta["geo"]["crs_epsg"] == 32633 and meta["geo"]["transform"] == list(ref.transform)
    assert geo.read_georeference(out / "scene.tif").transform == ref.transform
    fc = json.loads(vec.read_text())
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert fc["clipseg"]["coordinates"] == "world"
    _features_check(fc, labels, ref)
    assert corner_of(fc) == (ORIGIN[0], ORIGIN[1] - 10.0 * image.shape[0],
                             ORIGIN[0] + 10.0 * image.shape[1], ORIGIN[1])
    assert src.read_bytes() == before  # the input is untouched


def corner_of(fc):
    pts = np.array([p for f in fc["features"] for ring in f["geometry"]["coordinates"]
                    for p in ring])
    return (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())


def test_tiled_run_writes_the_same_georeferenced_result(tmp_path, model_args):
    src, image = _geo_scene(tmp_path / "big.tif", size=(70, 90))
    args = ["segment", str(src), "--classes", CLASSES, "--scores", "--vector",
            *_native(model_args)]
    assert main([*args, "-o", str(tmp_path / "whole"), "--tile-size", "0"]) == EXIT_OK
    assert main([*args, "-o", str(tmp_path / "tiled"), "--tile-size", "32"]) == EXIT_OK
    tiled, meta = io.read_labels(tmp_path / "tiled" / "big", lazy=True)
    whole, _ = io.read_labels(tmp_path / "whole" / "big")
    assert meta["image"]["tiled"] is True and isinstance(tiled, np.memmap)
    np.testing.assert_array_equal(np.asarray(tiled), whole)
    assert (whole[:6, -8:] == 0).all()
    for name in ("big.tif", "big.scores.tif"):
        _check_tags(src, tmp_path / "tiled" / name)
    assert tags_of(tmp_path / "tiled" / "big.tif")[42113] == "0"
    with tifffile.TiffFile(tmp_path / "tiled" / "big.scores.tif") as tif:
        assert len(tif.pages) == 1 and tif.series[0].shape == (3, 70, 90)
    assert meta["geo"]["crs_epsg"] == 32633
    # --vector without a file name: NAME.geojson next to the labels, same in both runs
    a = json.loads((tmp_path / "tiled" / "big.geojson").read_text())
    b = json.loads((tmp_path / "whole" / "big.geojson").read_text())
    assert a["features"] == b["features"]
    _features_check(a, whole, geo.read_georeference(src))


def test_model_transformation_variant_is_carried_and_used(tmp_path, model_args):
    m = [8.0, 6.0, 0.0, 1000.0,  6.0, -8.0, 0.0, 2000.0,  0, 0, 0, 0,  0, 0, 0, 1]
    src, image = _geo_scene(tmp_path / "rot.tif", matrix=m, nodata=None)
    vec = tmp_path / "rot.geojson"
    assert main(["segment", str(src), "--classes", CLASSES, "-o", str(tmp_path / "out"),
                 "--vector", str(vec), *model_args]) == EXIT_OK
    _check_tags(src, tmp_path / "out" / "rot.tif")
    assert 33550 not in tags_of(tmp_path / "out" / "rot.tif")
    labels, _ = io.read_labels(tmp_path / "out" / "rot")
    assert (labels > 0).all()                      # no GDAL_NODATA: nothing masked
    fc = json.loads(vec.read_text())
    ref = geo.read_georeference(src)
    _features_check(fc, labels, ref)
    h, w = labels.shape
    pts = {tuple(p) for f in fc["features"] for r in f["geometry"]["coordinates"] for p in r}
    assert (1000.0 + 8 * w + 6 * h, 2000.0 + 6 * w - 8 * h) in pts   # the far corner


def test_png_input_gives_pixel_coordinates_and_stays_png(tmp_path, model_args):
    src = save(tmp_path / "photo.png", scene(4))
    vec = tmp_path / "photo.geojson"
    assert main(["segment", str(src), "--classes", CLASSES, "-o", str(tmp_path / "out"),
                 "--vector", str(vec), *model_args]) == EXIT_OK
    labels, meta = io.read_labels(tmp_path / "out" / "photo")
    assert meta["file"] == "photo.png" and "geo" not in meta
    fc = json.loads(vec.read_text())
    assert "crs" not in fc and fc["clipseg"]["coordinates"] == "pixel"
    assert corner_of(fc) == (0.0, 0.0, float(labels.shape[1]), float(labels.shape[0]))
    assert sum(f["properties"]["area_px"] for f in fc["features"]) == labels.size


def test_batch_writes_one_geojson_per_image_and_resumes(tmp_path, model_args):
    folder = tmp_path / "tiles"
    folder.mkdir()
    _geo_scene(folder / "a.tif")
    save(folder / "sub" / "b.png", scene(8))
    out = tmp_path / "out"
    args = ["batch", str(folder), "--classes", CLASSES, "-o", str(out), *model_args]
    assert main([*args, "--vector"]) == EXIT_OK
    assert (out / "a.geojson").is_file() and (out / "sub" / "b.geojson").is_file()
    assert json.loads((out / "a.geojson").read_text())["clipseg"]["coordinates"] == "world"
    (out / "sub" / "b.geojson").unlink()
    stamp = (out / "a.tif").stat().st_mtime_ns
    assert main([*args, "--vector"]) == EXIT_OK       # resumed: only b is redone
    assert (out / "sub" / "b.geojson").is_file()
    assert (out / "a.tif").stat().st_mtime_ns == stamp


def test_vector_file_for_many_images_is_a_usage_error(tmp_path, model_args, capsys):
    a = save(tmp_path / "a.png", scene(1))
    b = save(tmp_path / "b.png", scene(2))
    code = main(["segment", str(a), str(b), "--classes", CLASSES, "-o", str(tmp_path / "o"),
                 "--vector", str(tmp_path / "x.geojson"), *model_args])
    assert code == EXIT_USAGE
    assert "expected a file name only for one image, got a run of 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_vector_without_rasterio_exits_2_with_the_extra(tmp_path, model_args, monkeypatch,
                                                         capsys):
    monkeypatch.setitem(sys.modules, "rasterio.features", None)
    src = save(tmp_path / "a.png", scene(1))
    code = main(["segment", str(src), "--classes", CLASSES, "-o", str(tmp_path / "o"),
                 "--vector", *model_args])
    assert code == EXIT_USAGE
    assert "pip install 'napari-clipseg[geo]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()           # refused before any image was segmented


def test_dask_run_writes_the_same_georeferenced_files(tmp_path, model_args, capsys):
    distributed = pytest.importorskip("distributed")
    from tests.cli.test_cli_dask import _same_tree

    folder = tmp_path / "in"
    folder.mkdir()
    _geo_scene(folder / "small.tif")
    _geo_scene(folder / "wide.tif", size=(40, 110))   # tiled with --tile-size 48
    args = ["batch", str(folder), "--classes", CLASSES, "--tile-size", "48", "--scores",
            "--vector", *_native(model_args)]
    assert main([*args, "-o", str(tmp_path / "serial")]) == EXIT_OK
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main([*args, "-o", str(tmp_path / "dask"), "--dask-scheduler",
                     cluster.scheduler_address]) == EXIT_OK
    assert _same_tree(tmp_path / "serial", tmp_path / "dask") == []   # byte for byte
    _, meta = io.read_labels(tmp_path / "dask" / "wide")
    assert meta["image"]["tiled"] is True and meta["geo"]["crs_epsg"] == 32633
    _check_tags(folder / "wide.tif", tmp_path / "dask" / "wide.tif")
    _check_tags(folder / "wide.tif", tmp_path / "dask" / "wide.scores.tif")
    assert (tmp_path / "dask" / "wide.geojson").is_file()


def test_a_reviewed_geotiff_draft_stays_georeferenced(tmp_path, model_args):
    """The review widget's save (napari_clipseg.review.series, no Qt) rewrites a batch draft:
    the corrected label file must still overlay its image in a GIS."""
    from clipseg.formats.review import REVIEWED, review_state
    from napari_clipseg.review.series import ReviewSeries

    images, drafts = tmp_path / "images", tmp_path / "drafts"
    images.mkdir()
    src, _image = _geo_scene(images / "tile.tif")
    assert main(["batch", str(images), "--classes", CLASSES, "-o", str(drafts),
                 *model_args]) == EXIT_OK
    series = ReviewSeries(images, drafts)
    loaded = series.load(0)
    corrected = loaded.labels.copy()
    corrected[10:20, 10:20] = 2
    series.save(0, corrected, None, REVIEWED, meta=loaded.meta)
    labels, meta = io.read_labels(drafts / "tile")
    np.testing.assert_array_equal(labels, corrected)
    assert review_state(meta) == REVIEWED and meta["file"] == "tile.tif"
    assert meta["geo"]["crs_epsg"] == 32633
    _check_tags(src, drafts / "tile.tif")
    assert geo.read_georeference(drafts / "tile.tif").transform == \
        geo.read_georeference(src).transform
