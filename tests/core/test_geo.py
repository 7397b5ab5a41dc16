"""GeoTIFF georeferencing (formats.geo): reading the tags, the affine, no-data, polygons."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tifffile

from clipseg.errors import InvalidInputError
from clipseg.formats import geo, io

UTM33_KEYS = (1, 1, 0, 3,  1024, 0, 1, 1,  1025, 0, 1, 1,  3072, 0, 1, 32633)
ORIGIN = (500000.0, 5000000.0)


def make_geotiff(path, image, *, scale=(10.0, 10.0), tiepoint=(0.0, 0.0) + ORIGIN,
                 matrix=None, keys=UTM33_KEYS, nodata="0", ascii_params="WGS 84 / UTM zone 33N|"):
    """Write ``image`` as a GeoTIFF the way GDAL does (tifffile extratags): pixel scale +
    tiepoint (or a ModelTransformation matrix), GeoKeys (EPSG:32633), GDAL_NODATA."""
    tags = []
    if matrix is not None:
        tags.append((34264, 12, 16, tuple(float(v) for v in matrix), True))
    else:
        i, j, x, y = tiepoint
        tags.append((33550, 12, 3, (*scale, 0.0), True))
        tags.append((33922, 12, 6, (i, j, 0.0, x, y, 0.0), True))
    tags.append((34735, 3, len(keys), keys, True))
    if ascii_params is not None:
        tags.append((34737, 2, 0, ascii_params, True))
    if nodata is not None:
        tags.append((42113, 2, 0, nodata, True))
    photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    tifffile.imwrite(path, image, photometric=photometric, extratags=tags)
    return path


def tags_of(path, codes=geo.GEO_TAGS):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return {c: page.tags[c].value for c in codes if c in page.tags}


def test_scale_and_tiepoint_give_a_north_up_affine(tmp_path):
    path = make_geotiff(tmp_path / "a.tif", np.zeros((4, 5, 3), np.uint8),
                        tiepoint=(2.0, 1.0) + ORIGIN, nodata="-9999")
    ref = geo.read_georeference(path)
    # raster (2, 1) sits at the origin: the image's corner is 2 columns left, 1 row up
    assert ref.transform == (10.0, 0.0, ORIGIN[0] - 20.0, 0.0, -10.0, ORIGIN[1] + 10.0)
    assert ref.crs_epsg == 32633 and ref.nodata == -9999.0 and ref.raster_type == "area"
    assert ref.pixel_area == 100.0
    x, y = ref.pixel_to_world([2, 5], [1, 4])
    np.testing.assert_allclose(x, [ORIGIN[0], ORIGIN[0] + 30])
    np.testing.assert_allclose(y, [ORIGIN[1], ORIGIN[1] - 30])
    assert {t[0] for t in ref.tags} == {33550, 33922, 34735, 34737, 42113}
    side = ref.sidecar()
    assert side["crs_epsg"] == 32633 and side["transform"][2] == ORIGIN[0] - 20.0
    json.dumps(side)  # human-readable and JSON-serialisable


def test_pixel_is_point_moves_the_origin_half_a_pixel(tmp_path):
    keys = (1, 1, 0, 3,  1024, 0, 1, 1,  1025, 0, 1, 2,  3072, 0, 1, 32633)
    ref = geo.read_georeference(make_geotiff(tmp_path / "p.tif", np.zeros((4, 5), np.uint8),
                                             keys=keys))
    assert ref.raster_type == "point"
    assert ref.transform == (10.0, 0.0, ORIGIN[0] - 5.0, 0.0, -10.0, ORIGIN[1] + 5.0)


def test_model_transformation_matrix_with_rotation(tmp_path):
    m = [8.0, 6.0, 0.0, 1000.0,  6.0, -8.0, 0.0, 2000.0,  0, 0, 0, 0,  0, 0, 0, 1]
    ref = geo.read_georeference(make_geotiff(tmp_path / "m.tif", np.zeros((4, 5), np.uint8),
                                             matrix=m, keys=(1, 1, 0, 1, 2048, 0, 1, 4326)))
    assert ref.transform == (8.0, 6.0, 1000.0, 6.0, -8.0, 2000.0)
    assert ref.crs_epsg == 4326 and ref.pixel_area == 100.0
    x, y = ref.pixel_to_world(5, 4)
    assert (float(x), float(y)) == (1000.0 + 40 + 24, 2000.0 + 30 - 32)


def test_plain_files_and_user_defined_crs(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 5), np.uint8))
    assert geo.read_georeference(plain) is None
    assert geo.read_georeference(tmp_path / "not-even-there.png") is None
    user = (1, 1, 0, 1, 3072, 0, 1, 32767)
    ref = geo.read_georeference(make_geotiff(tmp_path / "u.tif", np.zeros((4, 5), np.uint8),
                                             keys=user, nodata=None))
    assert ref.crs_epsg is None and ref.nodata is None and ref.transform is not None


def test_ground_control_points_keep_tags_but_no_affine(tmp_path):
    path = tmp_path / "gcp.tif"
    gcps = (0.0, 0.0, 0.0, 1.0, 2.0, 0.0,  4.0, 3.0, 0.0, 5.0, 6.0, 0.0)
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8), extratags=[
        (33922, 12, 12, gcps, True), (34735, 3, 8, (1, 1, 0, 1, 2048, 0, 1, 4326), True)])
    ref = geo.read_georeference(path)
    assert ref.transform is None and ref.pixel_area is None and ref.crs_epsg == 4326
    assert [t[0] for t in ref.label_tags()] == [33922, 34735, 42113]


def test_malformed_matrix_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8),
                     extratags=[(34264, 12, 6, (1.0,) * 6, True)])
    with pytest.raises(InvalidInputError, match="expected 16 numbers, got 6"):
        geo.read_georeference(path)


def test_write_labels_with_tiff_tags_is_a_geotiff_with_the_same_tags(tmp_path):
    src = make_geotiff(tmp_path / "in.tif", np.zeros((6, 7, 3), np.uint8), nodata="-9999")
    ref = geo.read_georeference(src)
    labels = np.array([[0, 1, 2, 2, 1, 1, 1]] * 6, np.uint8)
    written = io.write_labels(tmp_path / "out" / "x", labels, ["a", "b"],
                              tiff_tags=ref.label_tags(), extra={"geo": ref.sidecar()})
    assert written[0].name == "x.tif"  # a PNG-able label map, still a TIFF: tags need one
    out, meta = io.read_labels(written[0])
    np.testing.assert_array_equal(out, labels)
    got, want = tags_of(written[0]), tags_of(src)
    for code in geo.COPIED_TAGS:
        assert got.get(code) == want.get(code), geo.GEO_TAGS[code]
    assert got[42113] == "0"  # unlabeled is the label file's no-data, not the input's -9999
    assert geo.read_georeference(written[0]).transform == ref.transform
    assert meta["geo"]["crs_epsg"] == 32633
    with pytest.raises(InvalidInputError, match="expected a .tif name"):
        io.write_labels(tmp_path / "y.png", labels, ["a", "b"], tiff_tags=ref.label_tags())


def test_mask_nodata_in_strips_every_band_and_nan():
    data = np.ones((7, 4, 3), np.float32)
    data[1, 2] = -9999.0
    data[5, 0] = -9999.0
    data[6, 3, 0] = -9999.0          # one band only: a real pixel
    labels = np.full((7, 4), 2, np.uint8)
    assert geo.mask_nodata(labels, data, -9999.0, rows=2) == 2
    assert labels[1, 2] == 0 and labels[5, 0] == 0 and (labels == 0).sum() == 2
    nan = np.ones((3, 3), np.float32)
    nan[2, 2] = np.nan
    labels = np.ones((3, 3), np.uint8)
    assert geo.mask_nodata(labels, nan, float("nan")) == 1 and labels[2, 2] == 0
    assert geo.mask_nodata(labels, nan, None) == 0
    with pytest.raises(InvalidInputError, match="labels' shape"):
        geo.mask_nodata(np.ones((2, 2), np.uint8), nan, 0.0)


def _ring_area(ring):
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def test_vectorize_regions_holes_areas_and_world_coordinates(tmp_path):
    labels = np.ones((6, 8), np.uint8)       # class "field" everywhere
    labels[1:4, 1:4] = 2                     # a "pond" inside it: a hole in the field
    labels[5, 6:8] = 2                       # a second pond region
    labels[0, 7] = 0                         # one unlabeled pixel: no feature
    ref = geo.read_georeference(make_geotiff(tmp_path / "g.tif", np.zeros((6, 8), np.uint8)))
    fc = geo.vectorize(labels, ["field", "pond"], ref, name="g.tif")
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert fc["clipseg"]["coordinates"] == "world" and fc["clipseg"]["image"] == "g.tif"
    by_class = sorted((f["properties"]["class"], f["properties"]["area_px"])
                      for f in fc["features"])
    assert by_class == [("field", 36), ("pond", 2), ("pond", 9)]  # 48 - 9 - 2 - 1
    assert sum(a for _, a in by_class) == int((labels > 0).sum())
    field = next(f for f in fc["features"] if f["properties"]["class"] == "field")
    rings = field["geometry"]["coordinates"]
    assert len(rings) == 2                                  # exterior + the pond's hole
    assert _ring_area(rings[0]) > 0 > _ring_area(rings[1])  # right-hand rule
    area = sum(abs(_ring_area(r[0])) - sum(abs(_ring_area(h)) for h in r[1:])
               for r in (f["geometry"]["coordinates"] for f in fc["features"]))
    assert area == pytest.approx((labels > 0).sum() * 100.0)
    xs = [p[0] for p in rings[0]]
    ys = [p[1] for p in rings[0]]
    # the image's top-left corner (pixel edge (0, 0)) is the tiepoint
    assert min(xs) == ORIGIN[0] and max(ys) == ORIGIN[1]
    assert [ORIGIN[0], ORIGIN[1]] in [list(p) for p in rings[0]]
    assert min(ys) == ORIGIN[1] - 60.0 and max(xs) == ORIGIN[0] + 80.0


def test_vectorize_without_georeferencing_gives_pixel_coordinates():
    labels = np.zeros((4, 5), np.uint16)
    labels[1:3, 2:5] = 1
    fc = geo.vectorize(labels, ["roof"])
    assert "crs" not in fc and fc["clipseg"]["coordinates"] == "pixel"
    (feature,) = fc["features"]
    assert feature["properties"] == {"class": "roof", "label": 1, "area_px": 6}
    ring = feature["geometry"]["coordinates"][0]
    assert {tuple(p) for p in ring} == {(2.0, 1.0), (5.0, 1.0), (5.0, 3.0), (2.0, 3.0)}
    with pytest.raises(InvalidInputError, match="values in 0..1"):
        geo.vectorize(labels * 2, ["roof"])


def test_write_geojson_is_valid_json(tmp_path):
    labels = np.eye(4, dtype=np.uint8)
    path = geo.write_geojson(tmp_path / "v.geojson", labels, ["diag"])
    fc = json.loads(path.read_text())
    assert len(fc["features"]) == 4  # 4-connectivity: diagonal pixels are separate regions
    assert not list(tmp_path.glob(".*.part"))


def test_missing_rasterio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio.features", None)
    with pytest.raises(InvalidInputError, match=r"pip install 'napari-clipseg\[geo\]'"):
        geo.require_vector_deps()
    with pytest.raises(InvalidInputError, match="rasterio is not installed"):
        geo.vectorize(np.ones((2, 2), np.uint8), ["a"])
