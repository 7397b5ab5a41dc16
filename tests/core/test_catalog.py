"""The domain CLIPs of the registry: entries, offline loading paths and cache states.

No test downloads anything: real entries are checked for names, architectures and defaults,
and the loading paths run on fake Hugging Face caches holding tiny models.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipseg.apps.cli import main
from clipseg.config import ModelConfig
from clipseg.errors import ModelLoadError
from clipseg.features import dense_embeddings
from clipseg.models import get_entry, list_models, load_model, register_model, registry
from clipseg.models.catalog import B32_NOTE, CATALOG_ALIASES, CATALOG_ENTRIES
from clipseg.models.hub import cache_status
from clipseg.models.listing import model_listing
from clipseg.models.towers import tower_for
from tests.tiny_models import TINY_CONFIG, make_tiny_timm_clip, tiny_timm_config

HUB = {
    "biomedclip": ("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                   "biomedical", 16),
    "quiltnet-b32": ("hf-hub:wisdomik/QuiltNet-B-32", "microscopy", 32),
    "quiltnet-b16": ("hf-hub:wisdomik/QuiltNet-B-16", "microscopy", 16),
    "bioclip": ("hf-hub:imageomics/bioclip", "organisms", 16),
}
FILES = {  # alias: key, arch, Hugging Face file (or None: manual download), patch
    "remoteclip-b32": ("RemoteCLIP-ViT-B-32", "ViT-B-32",
                       ("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt"), 32),
    "remoteclip-l14": ("RemoteCLIP-ViT-L-14", "ViT-L-14",
                       ("chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt"), 14),
    "georsclip-b32": ("GeoRSCLIP-ViT-B-32", "ViT-B-32-quickgelu",
                      ("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt"), 32),
    "georsclip-l14": ("GeoRSCLIP-ViT-L-14", "ViT-L-14-quickgelu",
                      ("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-L-14.pt"), 14),
    "skyclip": ("SkyCLIP-ViT-L-14", "ViT-L-14", None, 14),
}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def fake_hub(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache holding ``files`` of ``repo`` (as hf_hub_download leaves it)."""
    commit = "1" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    return snapshot


def _safetensors(model, path: Path) -> bytes:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


# -- the real entries -----------------------------------------------------------------------------
@pytest.mark.parametrize("alias", list(HUB))
def test_hf_hub_entries(alias):
    key, domain, patch = HUB[alias]
    entry = get_entry(alias)
    assert entry.key == entry.arch == key and entry.is_hf_hub and entry.pretrained is None
    assert get_entry(key.upper()) is entry and key in list_models()
    assert entry.domain == domain and entry.middle_layer == 6 and entry.crop == 224
    assert entry.stride == (56 if patch == 32 else 112)
    assert (entry.note == B32_NOTE) == (patch == 32)
    assert key[len("hf-hub:"):] in entry.source and entry.description


@pytest.mark.parametrize("alias", list(FILES))
def test_checkpoint_entries_name_an_open_clip_architecture(alias):
    key, arch, hub_file, patch = FILES[alias]
    entry = get_entry(alias)
    assert (entry.key, entry.arch, entry.hub_file) == (key, arch, hub_file)
    assert entry.domain == "remote sensing" and entry.pretrained is None
    vision = open_clip.get_model_config(arch)["vision_cfg"]
    assert vision["patch_size"] == patch and vision["image_size"] == 224
    assert entry.middle_layer == (6 if vision["layers"] == 12 else 9) <= vision["layers"]
    assert entry.stride == (56 if patch == 32 else 112) and entry.crop == 224
    assert (entry.note == B32_NOTE) == (patch == 32)
    assert entry.source and (hub_file is not None or "epoch_20.pt" in entry.download)


def test_every_catalog_entry_and_alias_is_tested_and_resolves():
    keys = {e.key for e in CATALOG_ENTRIES}
    assert keys == {v[0] for v in HUB.values()} | {v[0] for v in FILES.values()}
    for alias, key in CATALOG_ALIASES.items():
        assert get_entry(alias).key == key


def test_entry_fields_are_validated():
    entry = get_entry("remoteclip-b32")
    for field, value in (("domain", "astronomy"), ("hub_file", ("repo",)),
                         ("hub_file", ("", "f.pt")), ("requires", "transformers")):
        with pytest.raises(Exception, match=field):
            dataclasses.replace(entry, **{field: value})
    assert dataclasses.replace(entry, hub_file=["a/b", "c.pt"]).hub_file == ("a/b", "c.pt")


def test_unknown_hf_hub_name_lists_the_registered_ones():
    with pytest.raises(Exception, match="registered hf-hub models.*QuiltNet-B-32"):
        get_entry("hf-hub:someone/else")


# -- offline: the same clear message as the paper's models ----------------------------------------
@pytest.mark.parametrize("alias, names", [
    ("quiltnet-b32", ["wisdomik/QuiltNet-B-32", "hf download"]),
    ("bioclip", ["imageomics/bioclip"]),
    ("remoteclip-b32", ["chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", "--checkpoint"]),
    ("georsclip-l14", ["Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-L-14.pt"]),
])
def test_offline_without_cache(alias, names, offline, tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelConfig(model=alias, cache_dir=str(tmp_path), device="cpu"))
    message = str(info.value)
    assert "not in the cache" in message and str(tmp_path) in message
    assert "HF_HUB_OFFLINE is set" in message
    for name in names:
        assert name in message


def test_manual_download_entry_says_where_to_get_the_file():
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelConfig(model="skyclip", device="cpu"))
    assert "opendatasharing.s3" in str(info.value) and "checkpoint" in str(info.value)


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install transformers"):
        load_model(ModelConfig(model="biomedclip", device="cpu"))


# -- the loading paths, on fake caches holding tiny models ----------------------------------------
def test_hub_file_checkpoint_loads_from_the_cache(tiny_clip, tiny_model_name, offline, tmp_path,
                                                 scratch_registry):
    data = _safetensors(tiny_clip, tmp_path / "w.safetensors")
    fake_hub(tmp_path / "cache", "lab/tiny-rs", {"ckpt/tiny.safetensors": data})
    entry = dataclasses.replace(get_entry(tiny_model_name), key="tiny-rs",
                                hub_file=("lab/tiny-rs", "ckpt/tiny.safetensors"))
    register_model(entry)
    assert cache_status(entry, str(tmp_path / "cache")) == "cached"
    assert cache_status(entry, str(tmp_path)) == "not cached"
    loaded = load_model(ModelConfig(model="tiny-rs", cache_dir=str(tmp_path / "cache"),
                                    device="cpu"))
    assert loaded.name == "tiny-rs"
    own = loaded.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in tiny_clip.state_dict().items())


@pytest.mark.parametrize("kind", ["open_clip ViT", "timm ViT"])
def test_hf_hub_model_loads_from_the_cache(kind, tiny_clip, offline, tmp_path,
                                           scratch_registry):
    if kind == "timm ViT":  # the BiomedCLIP layout: a timm tower in open_clip's TimmModel
        model, cfg = make_tiny_timm_clip(), tiny_timm_config("clipseg_test_timm_vit")
    else:
        model, cfg = tiny_clip, TINY_CONFIG
    repo, cache = "lab/tiny-hub", tmp_path / "cache"
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5],
                                                   "std": [0.25, 0.25, 0.25]}}
    files = {"open_clip_config.json": json.dumps(config).encode()}
    fake_hub(cache, repo, files)
    entry = dataclasses.replace(get_entry("bioclip"), key=f"hf-hub:{repo}",
                                arch=f"hf-hub:{repo}", middle_layer=2, crop=32, stride=16)
    register_model(entry)
    assert cache_status(entry, str(cache)) == "not cached"  # config without weights
    with pytest.raises(ModelLoadError, match="not in the cache"):
        load_model(ModelConfig(model=entry.key, cache_dir=str(cache), device="cpu"))
    fake_hub(cache, repo, {"open_clip_model.safetensors":
                           _safetensors(model, tmp_path / "w.safetensors")})
    assert cache_status(entry, str(cache)) == "cached"
    loaded = load_model(ModelConfig(model=entry.key, cache_dir=str(cache), device="cpu"))
    assert tower_for(loaded.model).kind == kind
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
    own = loaded.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())
    px = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dense_embeddings(loaded, px), dense_embeddings(model, px))
    assert loaded.tokenizer(["a cell"]).shape == (1, 77)


# -- the listing ----------------------------------------------------------------------------------
def test_listing_groups_by_domain_and_shows_cache_state(tmp_path):
    fake_hub(tmp_path, "chendelong/RemoteCLIP", {"RemoteCLIP-ViT-B-32.pt": b"x"})
    text = model_listing(str(tmp_path))
    heads = [line for line in text.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert heads == ["general:", "biomedical:", "microscopy:", "organisms:", "remote sensing:",
                     "demo:"]
    sections = {h: text.split(h, 1)[1].split("\n\n", 1)[0] for h in heads}
    assert "biomedclip" in sections["biomedical:"] and "QuiltNet-B-16" in sections["microscopy:"]
    assert "SkyCLIP-ViT-L-14" in sections["remote sensing:"] and "[manual download]" in text
    rs = sections["remote sensing:"].split("RemoteCLIP-ViT-B-32", 1)[1]
    assert rs.splitlines()[1].endswith("[cached]")
    assert "RemoteCLIP-ViT-L-14" in rs and "[not cached]" in rs.split("RemoteCLIP-ViT-L-14")[1]


def test_clipseg_models_command(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "remote sensing:" in out and "hf-hub:imageomics/bioclip" in out
    assert "32-px patches" in out


def test_a_profile_of_a_domain_entry_keeps_its_weights_source(tmp_path, monkeypatch):
    profiles = pytest.importorskip("clipseg.models.profiles")
    monkeypatch.setenv("CLIPSEG_HOME", str(tmp_path))
    base = get_entry("georsclip-b32")
    profiles.save_profile("my-fields", dataclasses.replace(base, middle_layer=5,
                                                           middle_layer_source="calibrated"))
    entry = get_entry("my-fields")
    assert entry.hub_file == base.hub_file and entry.domain == "remote sensing"
    assert entry.arch == base.arch and entry.middle_layer == 5
