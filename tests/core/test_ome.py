"""Microscopy metadata (formats.ome): pixel sizes and channel names in, pixel sizes out."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from clipseg.channels import ChannelChoice, dye_slot
from clipseg.errors import InvalidConfigError, InvalidInputError
from clipseg.formats import io, ome

NAMES = ["DAPI", "EGFP", "mCherry"]


def make_ome_tiff(path, data=None, *, x=0.325, y=0.325, unit="µm", names=NAMES, z=None):
    """An OME-TIFF (C, Y, X) with PhysicalSizeX/Y (+ Z) in ``unit`` and channel names."""
    data = np.zeros((len(names), 24, 32), np.uint16) if data is None else data
    meta = {"axes": "CYX", "PhysicalSizeX": x, "PhysicalSizeXUnit": unit,
            "PhysicalSizeY": y, "PhysicalSizeYUnit": unit, "Channel": {"Name": list(names)}}
    if z is not None:
        meta.update(PhysicalSizeZ=z, PhysicalSizeZUnit=unit)
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    return path


def ome_sizes(path):
    """``(PhysicalSizeX, unit, PhysicalSizeY, unit)`` of an OME-TIFF, read with tifffile."""
    import xml.etree.ElementTree as ET

    with tifffile.TiffFile(path) as tif:
        root = ET.fromstring(tif.ome_metadata)
    pixels = next(el for el in root.iter() if el.tag.endswith("Pixels"))
    return (float(pixels.get("PhysicalSizeX")), pixels.get("PhysicalSizeXUnit"),
            float(pixels.get("PhysicalSizeY")), pixels.get("PhysicalSizeYUnit"))


def write_ngff(folder, *, version="0.4", scale=(1.0, 0.5, 0.25), unit="micrometer",
               labels=("DAPI", "GFP"), global_scale=None):
    """The metadata of an OME-Zarr image (axes c, y, x), written as JSON files."""
    folder.mkdir()
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "yx"]
    ms = {"version": version, "axes": axes,
          "datasets": [{"path": "0", "coordinateTransformations": [
              {"type": "scale", "scale": list(scale)}]},
              {"path": "1", "coordinateTransformations": [
                  {"type": "scale", "scale": [1.0, scale[1] * 2, scale[2] * 2]}]}]}
    if global_scale is not None:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": list(global_scale)}]
    attrs = {"multiscales": [ms], "omero": {"channels": [{"label": v} for v in labels]}}
    if version == "0.4":
        (folder / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (folder / ".zattrs").write_text(json.dumps(attrs))
    else:
        attrs["multiscales"][0].pop("version")
        (folder / "zarr.json").write_text(json.dumps(
            {"zarr_format": 3, "node_type": "group",
             "attributes": {"ome": {"version": version, **attrs}}}))
    return folder


@pytest.mark.parametrize("value, unit, um", [
    (0.325, "µm", 0.325), (0.325, "μm", 0.325), (0.325, "um", 0.325), (2, "micron", 2.0),
    (650, "nm", 0.65), (0.001, "mm", 1.0), (5e-7, "m", 0.5), (5000, "Å", 0.5),
    (1, "angstrom", 1e-4), (1, "micrometer", 1.0), (1, "\\u00B5m", 1.0), (1, "cm", 1e4),
    (3, None, 3.0),   # OME's default unit is µm
])
def test_units_are_converted_to_micrometres(value, unit, um):
    assert ome.to_micrometres(value, unit) == pytest.approx(um)


@pytest.mark.parametrize("value, unit, says", [
    (1, "parsec", "expected a length unit"), (0, "µm", "> 0"), (-1, "nm", "> 0"),
    ("abc", "µm", "expected a number"), (float("nan"), "µm", "> 0")])
def test_bad_units_and_sizes_are_refused(value, unit, says):
    with pytest.raises(ValueError, match=says):
        ome.to_micrometres(value, unit)


def test_ome_tiff_pixel_sizes_and_channel_names(tmp_path):
    path = make_ome_tiff(tmp_path / "cells.ome.tif", x=650, y=700, unit="nm", z=2.0)
    info = ome.read_spatial(path)
    assert info.source == "ome-tiff"
    assert (info.y, info.x) == pytest.approx((0.7, 0.65))
    assert info.z == pytest.approx(2e-3)
    assert info.channel_names == tuple(NAMES)
    size = info.pixel_size()
    assert size.pop("source") == "ome-tiff"
    assert size == pytest.approx({"y": 0.7, "x": 0.65, "z": 2e-3})


def test_ome_tiff_without_sizes_has_names_but_no_scale(tmp_path):
    path = tmp_path / "plain.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint8), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": ["a", "b"]}})
    info = ome.read_spatial(path)
    assert info.pixel_size() is None and not info.has_pixel_size
    assert info.channel_names == ("a", "b")


def test_imagej_tiff_resolution_unit_spacing_and_labels(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((3, 10, 12), np.uint16), imagej=True,
                     resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "CYX", "unit": "micron", "spacing": 1.5,
                               "Labels": ["DAPI", "GFP", "Cy5"]})
    info = ome.read_spatial(path)
    assert info.source == "imagej"
    assert (info.y, info.x, info.z) == pytest.approx((0.25, 0.2, 1.5))
    assert info.channel_names == ("DAPI", "GFP", "Cy5")


def test_imagej_tiff_in_nanometres_and_uncalibrated(tmp_path):
    nm = tmp_path / "nm.tif"
    tifffile.imwrite(nm, np.zeros((10, 12), np.uint8), imagej=True, resolution=(0.01, 0.01),
                     metadata={"unit": "nm"})
    assert ome.read_spatial(nm).pixel_size()["x"] == pytest.approx(0.1)
    px = tmp_path / "px.tif"
    tifffile.imwrite(px, np.zeros((10, 12), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "pixel"})
    assert ome.read_spatial(px).pixel_size() is None


def test_plain_tiff_print_resolution_is_not_a_pixel_size(tmp_path):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, np.zeros((10, 12, 3), np.uint8), resolution=(72, 72),
                     resolutionunit="INCH")
    assert ome.read_spatial(path) is None
    assert ome.read_spatial(tmp_path / "x.png") is None


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_scale_units_and_channel_labels(tmp_path, version):
    folder = write_ngff(tmp_path / "img.zarr", version=version, scale=(1.0, 500, 250),
                        unit="nanometer")
    info = ome.read_spatial(folder)
    assert info.source == "ome-zarr"
    assert (info.y, info.x) == pytest.approx((0.5, 0.25))    # the first dataset's scale
    assert info.channel_names == ("DAPI", "GFP")


def test_ome_zarr_multiscale_scale_multiplies_and_no_unit_is_no_size(tmp_path):
    folder = write_ngff(tmp_path / "a.zarr", scale=(1.0, 0.5, 0.5), global_scale=(1, 2, 2))
    assert ome.read_spatial(folder).pixel_size()["x"] == pytest.approx(1.0)
    bare = write_ngff(tmp_path / "b.zarr", unit=None)
    assert ome.read_spatial(bare).pixel_size() is None


@pytest.mark.parametrize("break_it, says", [
    (lambda a: a["multiscales"][0]["axes"].__setitem__(1, "y"), "axes"),
    (lambda a: a["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
     .__setitem__("scale", [1.0, 0.5]), "scale of 3 numbers"),
    (lambda a: a["multiscales"][0]["axes"][2].__setitem__("unit", "furlong"), "length unit"),
    (lambda a: a.__setitem__("multiscales", {}), "multiscales"),
])
def test_malformed_ome_zarr_warns_and_gives_no_scale(tmp_path, break_it, says):
    folder = write_ngff(tmp_path / "bad.zarr")
    attrs = json.loads((folder / ".zattrs").read_text())
    break_it(attrs)
    (folder / ".zattrs").write_text(json.dumps(attrs))
    with pytest.warns(ome.SpatialWarning, match=says):
        info = ome.read_spatial(folder)
    assert info.pixel_size() is None


def test_unparsable_zarr_json_warns(tmp_path):
    folder = tmp_path / "broken.zarr"
    folder.mkdir()
    (folder / ".zattrs").write_text("{not json")
    with pytest.warns(ome.SpatialWarning, match="expected JSON"):
        assert ome.read_spatial(folder).pixel_size() is None


def test_malformed_ome_tiff_unit_warns_and_drops_that_size(tmp_path):
    path = make_ome_tiff(tmp_path / "bad.ome.tif", unit="furlong")
    with pytest.warns(ome.SpatialWarning, match="PhysicalSizeX: expected a length unit"):
        info = ome.read_spatial(path)
    assert info.pixel_size() is None
    assert info.channel_names == tuple(NAMES)  # the names are still read


def test_ome_xml_wins_over_contradicting_resolution_tags(tmp_path):
    path = tmp_path / "clash.ome.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), ome=True, resolution=(1e4, 1e4),
                     resolutionunit="CENTIMETER",
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    with pytest.warns(ome.SpatialWarning, match="using the OME-XML"):
        info = ome.read_spatial(path)
    assert (info.y, info.x) == (0.5, 0.5)


def test_label_tiff_carries_the_pixel_size_and_reads_back(tmp_path):
    labels = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16) % 3
    size = {"y": 0.5, "x": 0.325, "source": "ome-tiff"}
    written = io.write_labels(tmp_path / "draft", labels, ["a", "b"], pixel_size=size)
    assert written[0].name == "draft.tif"          # would be a PNG without a pixel size
    assert ome_sizes(written[0]) == (0.325, "µm", 0.5, "µm")
    with tifffile.TiffFile(written[0]) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 3            # centimetre
        xres = page.tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 0.325)
    back = ome.read_spatial(written[0])
    assert (back.y, back.x) == pytest.approx((0.5, 0.325))
    data, meta = io.read_labels(tmp_path / "draft")
    np.testing.assert_array_equal(data, labels)
    assert meta["pixel_size"] == {"y": 0.5, "x": 0.325, "unit": "µm", "source": "ome-tiff"}
    assert ome.pixel_size_from_entry(meta["pixel_size"]) == {"y": 0.5, "x": 0.325}


def test_an_explicit_png_keeps_the_pixel_size_in_the_sidecar_only(tmp_path):
    labels = np.ones((6, 7), np.uint8)
    written = io.write_labels(tmp_path / "d.png", labels, ["a"], pixel_size={"y": 2, "x": 2})
    assert written[0].suffix == ".png"
    assert io.read_sidecar(written[0])["pixel_size"]["x"] == 2.0


def test_bad_pixel_size_to_write_is_refused_and_bad_sidecar_entry_warns(tmp_path):
    with pytest.raises(InvalidInputError, match="pixel_size: expected sizes in µm > 0"):
        io.write_labels(tmp_path / "d", np.ones((4, 4), np.uint8), ["a"],
                        pixel_size={"y": 0, "x": 1})
    with pytest.warns(ome.SpatialWarning, match="'pixel_size' not understood"):
        assert ome.pixel_size_from_entry({"y": "big", "x": 1}) is None
    assert ome.pixel_size_from_entry({"y": 500, "x": 250, "unit": "nm"}) == \
        pytest.approx({"y": 0.5, "x": 0.25})


# --------------------------------------------------------------------------------------------
# --channels: names, slots, dye presets
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("words, want", [
    (["2", "1", "0"], (2, 1, 0)), (["mCherry", "EGFP", "DAPI"], (2, 1, 0)),
    (["-", "egfp", "dapi"], (None, 1, 0)), (["g=EGFP", "b=DAPI"], (None, 1, 0)),
    (["red=mcherry"], (2, None, None)), (["dyes"], (2, 1, 0)), (["none", "-1", "0"],
                                                                (None, 2, 0)),
])
def test_channel_choices_resolve_against_the_file_names(words, want):
    assert ChannelChoice.parse(words).resolve(NAMES, 3, "cells.tif") == want


def test_an_unknown_name_lists_the_channels_the_file_has():
    with pytest.raises(InvalidInputError, match="'GFP' not found: cells.tif has channels "
                                                "'DAPI', 'EGFP', 'mCherry'"):
        ChannelChoice.parse(["-", "GFP", "DAPI"]).resolve(NAMES, 3, "cells.tif")
    with pytest.raises(InvalidInputError, match="names none of its 3 channels"):
        ChannelChoice.parse(["DAPI", "-", "-"]).resolve((), 3, "plain.tif")


@pytest.mark.parametrize("words, says", [
    (["1", "2"], "expected R G B"), (["r=1", "r=2"], "red twice"), (["x=DAPI"], "got 'x=DAPI'"),
    (["none", "-", "none"], "at least one channel index"), (["r=1", "2", "3"], "expected R G B"),
])
def test_bad_channel_words_are_refused(words, says):
    with pytest.raises(InvalidConfigError, match=says):
        ChannelChoice.parse(words)


def test_dye_presets():
    assert [dye_slot(n) for n in ("DAPI", "Hoechst 33342", "Alexa Fluor 488", "FITC",
                                  "TRITC", "Cy3", "AF568", "Cy5", "Alexa Fluor 647", "PI",
                                  "brightfield", "Pin")] == \
        ["b", "b", "g", "g", "r", "r", "r", "far-red", "far-red", "r", None, None]
    dyes = ChannelChoice.parse(["dyes"])
    # far red takes the red slot only when no red dye is there
    assert dyes.resolve(["Cy5", "GFP", "DAPI"], 3) == (0, 1, 2)
    assert dyes.resolve(["Cy5", "mCherry", "DAPI"], 3) == (1, None, 2)
    with pytest.raises(InvalidInputError, match="'GFP' and 'FITC' both green"):
        dyes.resolve(["GFP", "FITC"], 2)
    with pytest.raises(InvalidInputError, match="expected channel names that are dyes"):
        dyes.resolve(["phase", "bf"], 2)
