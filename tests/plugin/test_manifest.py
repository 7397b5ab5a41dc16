"""The npe2 manifest: valid, complete, importable, and the root copy identical."""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_MANIFEST = ROOT / "napari_clipseg" / "napari.yaml"


def test_root_and_package_manifests_are_identical():
    assert (ROOT / "napari.yaml").read_bytes() == PACKAGE_MANIFEST.read_bytes()


def test_manifest_validates_and_contributes_everything():
    manifest = PluginManifest.from_file(PACKAGE_MANIFEST)  # raises on an invalid manifest
    assert manifest.name == "napari-clipseg"
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["CLIP open-vocabulary segmentation",
                                                         "Review a dataset"]
    assert {s.key for s in contrib.sample_data} >= {"ihc", "cell", "coffee", "shapes"}
    assert contrib.readers and contrib.writers
    assert contrib.writers[0].layer_types == ["labels"]
    commands = {c.id for c in contrib.commands}
    referenced = ({w.command for w in contrib.widgets} | {r.command for r in contrib.readers}
                  | {w.command for w in contrib.writers}
                  | {s.command for s in contrib.sample_data})
    assert referenced <= commands


def test_every_python_name_imports():
    data = yaml.safe_load(PACKAGE_MANIFEST.read_text())
    names = [c["python_name"] for c in data["contributions"]["commands"]]
    assert names
    for name in names:
        module, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), name


def test_installed_entry_point_finds_this_manifest():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-clipseg"]
    assert len(eps) == 1 and eps[0].value == "napari_clipseg:napari.yaml"


def test_engine_does_not_import_napari_or_qt():
    """Dependencies point one way: no engine module names napari, Qt or magicgui."""
    forbidden = ("import napari", "from napari", "qtpy", "PyQt", "magicgui")
    for path in (ROOT / "src" / "clipseg").rglob("*.py"):
        text = path.read_text()
        assert not any(f in text for f in forbidden), path
