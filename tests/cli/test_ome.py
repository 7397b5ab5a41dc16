"""Microscopy inputs through ``clipseg segment``/``batch``/``calibrate``: pixel sizes written
back with the labels, ``--channels`` by channel name and by dye preset."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from clipseg.apps.calibrate_cli import read_pairs
from clipseg.apps.cli import EXIT_OK, EXIT_USAGE, build_parser, main
from clipseg.channels import ChannelChoice
from clipseg.formats import io, ome
from tests.cli.conftest import scene
from tests.core.test_ome import NAMES, make_ome_tiff, ome_sizes

CLASSES = "red, green, dark"


def _cells(path, size=(40, 52), x=0.325, y=0.4):
    """A (C, Y, X) uint16 OME-TIFF: channels DAPI, EGFP, mCherry = blue, green, red of a
    scene, so the dye preset and 'mCherry EGFP DAPI' give back the scene's RGB."""
    rgb = scene(3, size).astype(np.uint16) * 200
    data = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]])
    return make_ome_tiff(path, data, x=x, y=y), rgb


def _run(src, out, model_args, *extra):
    return main(["segment", str(src), "--classes", CLASSES, "-o", str(out), *extra,
                 *model_args])


def test_ome_tiff_labels_keep_the_pixel_size_and_say_which_channels(tmp_path, model_args):
    src, _ = _cells(tmp_path / "cells.ome.tif")
    before = src.read_bytes()
    out = tmp_path / "out"
    assert _run(src, out, model_args, "--channels", "mCherry", "EGFP", "DAPI",
                "--scores") == EXIT_OK
    labels, meta = io.read_labels(out / "cells.ome")
    assert meta["file"] == "cells.ome.tif"        # a TIFF, so the size travels with it
    assert labels.shape == (40, 52)               # the input's size (worked at 48 px)
    assert ome_sizes(out / "cells.ome.tif") == (0.325, "µm", 0.4, "µm")
    assert meta["pixel_size"] == {"y": 0.4, "x": 0.325, "unit": "µm", "source": "ome-tiff"}
    assert meta["channels"]["names"] == NAMES
    assert meta["channels"]["r"] == {"index": 2, "name": "mCherry"}
    assert meta["channels"]["b"] == {"index": 0, "name": "DAPI"}
    with tifffile.TiffFile(out / "cells.ome.scores.tif") as tif:
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 0.325, rel=1e-6)
    assert src.read_bytes() == before


def test_channels_by_name_preset_and_index_give_the_same_labels(tmp_path, model_args):
    src, _ = _cells(tmp_path / "cells.ome.tif")
    results = {}
    for key, words in (("names", ["mCherry", "EGFP", "DAPI"]), ("dyes", ["dyes"]),
                       ("slots", ["r=mcherry", "g=EGFP", "b=dapi"]), ("index", ["2", "1", "0"])):
        assert _run(src, tmp_path / key, model_args, "--channels", *words) == EXIT_OK
        results[key] = io.read_labels(tmp_path / key / "cells.ome")[0]
    for key in ("dyes", "slots", "index"):
        np.testing.assert_array_equal(results[key], results["names"])
    # a black slot is recorded as such
    assert _run(src, tmp_path / "gb", model_args, "--channels", "-", "EGFP", "DAPI") == EXIT_OK
    assert io.read_sidecar(tmp_path / "gb" / "cells.ome")["channels"]["r"] is None


def test_unknown_channel_name_stops_the_run_and_lists_the_names(tmp_path, model_args, capsys):
    src, _ = _cells(tmp_path / "cells.ome.tif")
    code = _run(src, tmp_path / "out", model_args, "--channels", "-", "GFP", "DAPI")
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "'GFP' not found: the first image, cells.ome.tif, has channels 'DAPI', 'EGFP', " \
           "'mCherry'" in err
    assert not (tmp_path / "out" / "cells.ome.clipseg.json").exists()


def test_names_for_a_file_without_channel_names_say_to_use_indices(tmp_path, model_args,
                                                                   capsys):
    src = tmp_path / "plain.tif"
    tifffile.imwrite(src, np.moveaxis(scene(1), -1, 0).astype(np.uint16),
                     photometric="minisblack", metadata={"axes": "CYX"})
    assert _run(src, tmp_path / "out", model_args, "--channels", "DAPI", "-", "-") == EXIT_USAGE
    assert "names none of its 3 channels" in capsys.readouterr().err


def test_tiled_run_carries_the_pixel_size_too(tmp_path, model_args):
    src, _ = _cells(tmp_path / "big.ome.tif", size=(70, 90), x=0.5, y=0.5)
    args = list(model_args)
    args[args.index("--short-side") + 1] = "0"
    assert main(["segment", str(src), "--classes", CLASSES, "-o", str(tmp_path / "t"),
                 "--tile-size", "32", "--channels", "dyes", *args]) == EXIT_OK
    labels, meta = io.read_labels(tmp_path / "t" / "big.ome", lazy=True)
    assert meta["image"]["tiled"] is True and isinstance(labels, np.memmap)
    assert ome_sizes(tmp_path / "t" / "big.ome.tif") == (0.5, "µm", 0.5, "µm")
    assert meta["pixel_size"]["x"] == 0.5 and meta["channels"]["g"]["name"] == "EGFP"


def test_png_input_has_no_pixel_size_and_stays_a_png(tmp_path, model_args):
    src = tmp_path / "a.png"
    Image.fromarray(scene(0)).save(src)
    assert _run(src, tmp_path / "out", model_args) == EXIT_OK
    meta = io.read_sidecar(tmp_path / "out" / "a")
    assert meta["file"] == "a.png" and "pixel_size" not in meta and "channels" not in meta


def test_batch_of_imagej_tiffs_keeps_each_pixel_size(tmp_path, model_args):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, res in (("a", 1 / 0.2), ("b", 1 / 0.8)):
        tifffile.imwrite(folder / f"{name}.tif", scene(2), imagej=True,
                         resolution=(res, res), metadata={"unit": "micron"})
    assert main(["batch", str(folder), "--classes", CLASSES, "-o", str(tmp_path / "out"),
                 *model_args]) == EXIT_OK
    for name, um in (("a", 0.2), ("b", 0.8)):
        info = ome.read_spatial(tmp_path / "out" / f"{name}.tif")
        assert (info.y, info.x) == pytest.approx((um, um))
        assert io.read_sidecar(tmp_path / "out" / name)["pixel_size"]["source"] == "imagej"


def test_calibrate_takes_channels_by_name(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    _, rgb = _cells(tmp_path / "img" / "c.tif")
    Image.fromarray(np.ones((40, 52), np.uint8)).save(tmp_path / "lab" / "c.png")
    args = build_parser().parse_args(["calibrate", "--images", "img", "--masks", "lab",
                                      "--channels", "mCherry", "EGFP", "DAPI"])
    assert args.channels == ["mCherry", "EGFP", "DAPI"]
    images, masks, names = read_pairs(tmp_path / "img", tmp_path / "lab",
                                      ChannelChoice.parse(args.channels))
    assert names == ["c"] and images[0].shape == (40, 52, 3)
    expect = (rgb - rgb.min()) / (rgb.max() - rgb.min())   # the whole image's range
    np.testing.assert_allclose(images[0], expect, atol=1e-6)
    swapped, _, _ = read_pairs(tmp_path / "img", tmp_path / "lab",
                               ChannelChoice.parse(["DAPI", "EGFP", "mCherry"]))
    np.testing.assert_allclose(swapped[0], expect[..., ::-1], atol=1e-6)


def test_calibrate_pairs_ome_tiffs_with_masks_named_without_ome(tmp_path):
    from clipseg.errors import InvalidInputError

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("a.ome.tif", "b.ome.tif", "c.ome.tif"):
        _cells(tmp_path / "img" / name)
    Image.fromarray(np.ones((40, 52), np.uint8)).save(tmp_path / "lab" / "a.png")
    Image.fromarray(np.ones((40, 52), np.uint8)).save(tmp_path / "lab" / "b.ome.png")
    _images, _masks, names = read_pairs(tmp_path / "img", tmp_path / "lab")
    assert names == ["a", "b"]  # c.ome.tif has no mask
    (tmp_path / "other").mkdir()
    Image.fromarray(np.ones((40, 52), np.uint8)).save(tmp_path / "other" / "zzz.png")
    with pytest.raises(InvalidInputError, match=r"no such pairs \(images such as a.ome.tif.*"
                                                r"masks such as zzz.png"):
        read_pairs(tmp_path / "img", tmp_path / "other")


def make_ome_zarr(folder, data, *, version="0.4", scale=(1.0, 0.5, 0.5),
                  names=("DAPI", "EGFP", "mCherry")):
    """A one-level OME-Zarr image (c, y, x) written with zarr: arrays + NGFF metadata."""
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(folder), mode="w", zarr_format=2 if version == "0.4" else 3)
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 16, 16))
    array[...] = data
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    ms = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": list(scale)}]}]}
    omero = {"channels": [{"label": n} for n in names]}
    if version == "0.4":
        group.attrs.update({"multiscales": [{"version": "0.4", **ms}], "omero": omero})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [ms], "omero": omero}})
    return folder


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_input_is_segmented_with_its_pixel_size(tmp_path, model_args, version):
    _, rgb = _cells(tmp_path / "ref.ome.tif")
    planes = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]])
    src = make_ome_zarr(tmp_path / "cells.zarr", planes, version=version)
    assert _run(src, tmp_path / "z", model_args, "--channels", "dyes") == EXIT_OK
    assert _run(tmp_path / "ref.ome.tif", tmp_path / "t", model_args,
                "--channels", "dyes") == EXIT_OK
    labels, meta = io.read_labels(tmp_path / "z" / "cells")
    ref, _ = io.read_labels(tmp_path / "t" / "ref.ome")
    np.testing.assert_array_equal(labels, ref)       # the same pixels, read lazily from Zarr
    assert meta["file"] == "cells.tif" and ome_sizes(tmp_path / "z" / "cells.tif") == \
        (0.5, "µm", 0.5, "µm")
    assert meta["pixel_size"]["source"] == "ome-zarr"
    assert meta["channels"]["b"] == {"index": 0, "name": "DAPI"}


def test_batch_finds_ome_zarr_folders(tmp_path, model_args):
    folder = tmp_path / "in"
    folder.mkdir()
    planes = np.moveaxis(scene(4), -1, 0).astype(np.uint16)
    make_ome_zarr(folder / "a.zarr", planes)
    Image.fromarray(scene(5)).save(folder / "b.png")
    assert main(["batch", str(folder), "--classes", CLASSES, "-o", str(tmp_path / "out"),
                 *model_args]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "out").glob("*.clipseg.json")) == \
        ["a.clipseg.json", "b.clipseg.json"]


def test_ome_zarr_stack_and_missing_zarr_are_clear_errors(tmp_path, model_args, capsys,
                                                          monkeypatch):
    zarr = pytest.importorskip("zarr")
    src = tmp_path / "stack.zarr"
    group = zarr.open_group(str(src), mode="w", zarr_format=2)
    group.create_array("0", shape=(4, 20, 24), dtype=np.uint8)
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": [
        {"name": "z", "type": "space"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]})
    assert _run(src, tmp_path / "o", model_args) == 1          # that image failed
    assert "expected a 2-D image (axes yx or cyx" in (tmp_path / "o" /
                                                      "clipseg-failures.log").read_text()
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)
    from clipseg.apps.largeimage import open_image
    from clipseg.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="expected the zarr package .* pip install zarr"):
        open_image(src)
