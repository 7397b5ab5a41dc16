"""One function resolves options against a model; every caller gets the same answer."""
from __future__ import annotations

import pytest

from clipseg.config import SegmentConfig
from clipseg.errors import InvalidConfigError
from clipseg.models import get_entry
from clipseg.models.bundled import BUNDLED_ARCH
from clipseg.pipeline import Segmenter
from clipseg.resolve import MODEL_DEFAULTS, resolve_config


def test_registry_defaults_fill_every_model_dependent_option():
    entry = get_entry(BUNDLED_ARCH)
    cfg = resolve_config(SegmentConfig().replace(model=BUNDLED_ARCH))
    flat = cfg.to_flat()
    for option, attr in MODEL_DEFAULTS.items():
        assert flat[option] == getattr(entry, attr), option
    assert cfg.window.short_side == 0           # the toy model works at the drawn size, not 448


def test_explicit_values_win_and_zero_keeps_the_original_size():
    cfg = resolve_config(SegmentConfig().replace(model=BUNDLED_ARCH, short_side=0, crop=48,
                                                 middle_layer=2))
    assert (cfg.window.short_side, cfg.window.crop, cfg.readout.middle_layer) == (0, 48, 2)
    assert cfg.window.stride == get_entry(BUNDLED_ARCH).stride


def test_resolving_twice_changes_nothing():
    once = resolve_config(SegmentConfig().replace(model=BUNDLED_ARCH))
    assert resolve_config(once) == once


def test_stride_above_the_models_crop_is_refused():
    with pytest.raises(InvalidConfigError, match="stride: expected at most crop"):
        resolve_config(SegmentConfig().replace(model=BUNDLED_ARCH, stride=1000))


def test_layers_beyond_the_tower_are_refused_when_its_depth_is_known():
    cfg = SegmentConfig().replace(model=BUNDLED_ARCH, middle_layer=99)
    with pytest.raises(InvalidConfigError,
                       match=r"middle_layer: expected a block number in 1\.\.6"):
        resolve_config(cfg, num_layers=6)
    with pytest.raises(InvalidConfigError, match="dsi_layers: expected at most 6"):
        resolve_config(SegmentConfig().replace(model=BUNDLED_ARCH, dsi_layers=9), num_layers=6)


def test_segmenter_and_batch_resolve_the_demo_model_alike(tmp_path):
    from clipseg.apps.batch import wants_tiling
    from clipseg.apps.jobs import RunOptions

    cfg = SegmentConfig().replace(model=BUNDLED_ARCH, device="cpu")
    seg = Segmenter(cfg)
    assert seg.resolved_config == resolve_config(cfg)
    with pytest.raises(InvalidConfigError, match="middle_layer"):
        _ = Segmenter(cfg.replace(middle_layer=99)).resolved_config
    options = RunOptions(output=tmp_path, tile_size=32)
    assert wants_tiling((200, 200), cfg, options)                # original size: tiled
    assert not wants_tiling((200, 200), cfg.replace(short_side=64), options)  # resized
