"""The model registry: paper entries, aliases, synthesised entries, errors."""
from __future__ import annotations

import dataclasses
import math

import open_clip
import pytest

from clipseg.errors import InvalidConfigError, UnsupportedModelError
from clipseg.models import ModelEntry, get_entry, list_models, register_model, registry
from clipseg.models.registry import synthesise_entry

PAPER_KEYS = [
    "ViT-B-16/openai", "ViT-L-14/openai", "ViT-B-16/laion400m_e32", "ViT-L-14/laion400m_e32",
    "ViT-B-16-quickgelu/metaclip_400m", "ViT-L-14-quickgelu/metaclip_400m",
    "ViT-B-16-quickgelu/metaclip_fullcc", "ViT-L-14-quickgelu/metaclip_fullcc",
]


@pytest.mark.parametrize("key", PAPER_KEYS)
def test_paper_entries_exist_in_open_clip(key):
    entry = get_entry(key)
    assert entry.key == key
    assert (entry.arch, entry.pretrained) in open_clip.list_pretrained()
    layers = open_clip.get_model_config(entry.arch)["vision_cfg"]["layers"]
    assert 1 <= entry.middle_layer <= layers
    assert entry.stride <= entry.crop
    assert key in list_models()


def test_middle_layers_and_their_sources():
    for key in PAPER_KEYS:
        entry = get_entry(key)
        if "-L-14" in key:
            assert entry.middle_layer == 9 and "paper Fig. 3" in entry.middle_layer_source
        else:
            assert entry.middle_layer == 6 and "not measured" in entry.middle_layer_source
        assert (entry.crop, entry.stride, entry.short_side, entry.logit_scale) == (
            224, 112, 448, 40.0)


@pytest.mark.parametrize("alias, key", [
    ("clip-b16", "ViT-B-16/openai"), ("CLIP-L14", "ViT-L-14/openai"),
    ("openclip-b16", "ViT-B-16/laion400m_e32"), ("OpenCLIP-L14", "ViT-L-14/laion400m_e32"),
    ("metaclip-b16", "ViT-B-16-quickgelu/metaclip_400m"),
    ("metaclip-l14-fullcc", "ViT-L-14-quickgelu/metaclip_fullcc"),
    ("vit-b-16/OPENAI", "ViT-B-16/openai"), ("  ViT-L-14/openai ", "ViT-L-14/openai"),
])
def test_aliases_and_case(alias, key):
    assert get_entry(alias).key == key


def test_synthesised_entry_for_tiny_arch(tiny_model_name):
    entry = get_entry(tiny_model_name)
    cfg = open_clip.get_model_config(tiny_model_name)["vision_cfg"]
    assert entry.arch == tiny_model_name and entry.pretrained is None
    assert entry.middle_layer == math.ceil(cfg["layers"] / 2) == 2
    assert entry.crop == cfg["image_size"] == 32 and entry.stride == 16
    assert entry.middle_layer_source.startswith("synthesised")


def test_synthesised_entry_for_open_clip_arch_and_tag():
    bare = get_entry("ViT-B-32")
    assert (bare.arch, bare.pretrained, bare.middle_layer, bare.crop) == (
        "ViT-B-32", None, 6, 224)
    tagged = get_entry("ViT-L-14/laion2b_s32b_b82k")
    assert tagged.pretrained == "laion2b_s32b_b82k"
    assert tagged.middle_layer == 12  # ceil(24 / 2), not the paper's 9: other weights


def test_unknown_tag_lists_known_tags():
    with pytest.raises(InvalidConfigError, match="laion400m_e32"):
        get_entry("ViT-B-16/not-a-tag")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InvalidConfigError) as info:
        get_entry("ViT-B-61/openai")
    message = str(info.value)
    assert "did you mean" in message and "'ViT-B-16/openai'" in message
    assert "list_models()" in message
    with pytest.raises(InvalidConfigError, match="list_models"):
        get_entry("zzzzzz")


def test_non_vit_arch_is_unsupported():
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        get_entry("RN50")


@pytest.mark.parametrize("field, value", [
    ("middle_layer", 0), ("middle_layer", 2.5), ("crop", 8), ("stride", 300),
    ("logit_scale", 0.0), ("logit_scale", float("nan")), ("key", " "), ("pretrained", ""),
    ("short_side", True),
])
def test_entry_validation(field, value):
    entry = get_entry("clip-b16")
    with pytest.raises(InvalidConfigError, match=field):
        dataclasses.replace(entry, **{field: value})


def test_register_model(tiny_model_name, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # keep others clean
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    entry = dataclasses.replace(get_entry(tiny_model_name), key="tiny-test-entry",
                                middle_layer=3, middle_layer_source="test")
    register_model(entry, aliases=("tiny-alias-xyz",))
    assert get_entry("TINY-ALIAS-XYZ") is entry
    assert "tiny-test-entry" in list_models()
    with pytest.raises(InvalidConfigError, match="already registered"):
        register_model(entry)
    register_model(dataclasses.replace(entry, middle_layer=4), overwrite=True)
    assert get_entry("tiny-test-entry").middle_layer == 4
    with pytest.raises(InvalidConfigError, match="ModelEntry"):
        register_model({"key": "x"})


def test_synthesise_entry_from_given_sizes():
    entry = synthesise_entry("my-net", None, key="my-net", layers=7, patch_size=14,
                             image_size=(336, 336))
    assert isinstance(entry, ModelEntry)
    assert (entry.middle_layer, entry.crop, entry.stride) == (4, 336, 168)


def test_profiles_are_consulted(tmp_path, monkeypatch):
    from clipseg.models import profiles

    monkeypatch.setenv("CLIPSEG_HOME", str(tmp_path))
    base = get_entry("clip-b16")
    profiles.save_profile("my-cells", dataclasses.replace(base, middle_layer=7,
                                                          middle_layer_source="calibrated"))
    entry = get_entry("my-cells")
    assert entry.middle_layer == 7 and entry.key == "my-cells"
    assert "my-cells" in list_models()
