"""The configuration dataclasses: defaults of the paper, validation, flat mapping."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from clipseg.config import (
    READOUTS,
    LabelConfig,
    ModelConfig,
    ReadoutConfig,
    RefineConfig,
    SegmentConfig,
    WindowConfig,
)
from clipseg.errors import InvalidConfigError


def test_defaults_are_the_papers_and_methods():
    r = ReadoutConfig()
    assert (r.method, r.tau, r.eps, r.min_samples, r.dsi_layers) == ("clipseg", 6.0, 0.75, 1, 3)
    assert r.middle_layer is None and r.relation and r.dsi_mode == "value_mean"
    assert not r.cls_in_attention
    w = WindowConfig()
    assert (w.short_side, w.crop, w.stride) == (None, None, None)  # all three: the model's values
    assert RefineConfig().pamr_dilations == (8, 16) and RefineConfig().pamr_iterations == 10
    assert set(READOUTS) >= {"clipseg", "maskclip", "sclip", "clearclip", "naclip",
                             "kk_last", "kk_middle"}


@pytest.mark.parametrize(
    "cls, kwargs, needle",
    [
        (ReadoutConfig, {"method": "segformer"}, "method: expected one of clipseg"),
        (ReadoutConfig, {"tau": 0}, "tau: expected a number > 0"),
        (ReadoutConfig, {"tau": float("nan")}, "tau: expected a finite number"),
        (ReadoutConfig, {"eps": -0.1}, "eps"),
        (ReadoutConfig, {"min_samples": 0}, "min_samples: expected an integer >= 1"),
        (ReadoutConfig, {"middle_layer": 0}, "middle_layer"),
        (ReadoutConfig, {"middle_layer": 6.5}, "middle_layer: expected an integer"),
        (ReadoutConfig, {"dsi_layers": True}, "dsi_layers: expected an integer"),
        (ReadoutConfig, {"dsi_mode": "max"}, "dsi_mode"),
        (WindowConfig, {"crop": 224, "stride": 300}, "stride: expected at most crop"),
        (WindowConfig, {"batch_size": 0}, "batch_size"),
        (LabelConfig, {"threshold": 1.5}, "threshold: expected a number <= 1.0"),
        (LabelConfig, {"class_thresholds": {"road": -1}}, "class_thresholds['road']"),
        (LabelConfig, {"class_thresholds": {" ": 0.2}}, "non-empty class names"),
        (LabelConfig, {"prompts": "imagenet1000"}, "prompts: expected one of imagenet80"),
        (RefineConfig, {"pamr_dilations": ()}, "pamr_dilations"),
        (RefineConfig, {"pamr_dilations": (0, 2)}, "pamr_dilations"),
        (ModelConfig, {"device": "tpu"}, "device: expected one of auto, cpu, cuda, mps"),
        (ModelConfig, {"model": ""}, "model"),
        (ModelConfig, {"precision": "int8"}, "precision"),
    ],
)
def test_invalid_values_say_what_was_expected_and_what_arrived(cls, kwargs, needle):
    with pytest.raises(InvalidConfigError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert needle in message
    assert "got" in message


def test_configs_are_frozen_and_hashable():
    cfg = SegmentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.readout.tau = 3  # type: ignore[misc]
    assert hash(cfg) == hash(SegmentConfig())
    assert hash(cfg.replace(tau=5)) != hash(cfg)


def test_class_thresholds_mapping_is_normalised_and_looked_up():
    lc = LabelConfig(threshold=0.3, class_thresholds={"water": 0.6, "road": 0.1})
    assert lc.class_thresholds == (("road", 0.1), ("water", 0.6))
    assert lc.threshold_for("water") == 0.6
    assert lc.threshold_for("tree") == 0.3


def test_flat_round_trip_through_json():
    cfg = SegmentConfig().replace(model="ViT-L-14/openai", tau=5.0, pamr=True,
                                  pamr_dilations=[1, 2], class_thresholds={"sky": 0.5},
                                  crop=336, stride=112)
    flat = json.loads(json.dumps(cfg.to_flat()))
    assert flat["tau"] == 5.0 and flat["pamr_dilations"] == [1, 2]
    assert flat["class_thresholds"] == {"sky": 0.5}
    again = SegmentConfig.from_flat(flat)
    assert again == cfg


def test_flat_names_are_unique_across_groups():
    names = [f.name for cls in (ModelConfig, ReadoutConfig, WindowConfig, LabelConfig,
                                RefineConfig) for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))
    assert set(SegmentConfig.flat_fields()) == set(names)


def test_unknown_flat_option_is_an_error_listing_valid_names():
    with pytest.raises(InvalidConfigError) as info:
        SegmentConfig().replace(temperature=6)
    assert "temperature" in str(info.value) and "tau" in str(info.value)


def test_replace_validates_the_new_value():
    with pytest.raises(InvalidConfigError):
        SegmentConfig().replace(eps=0)


def test_group_type_is_checked():
    with pytest.raises(InvalidConfigError):
        SegmentConfig(readout=WindowConfig())  # type: ignore[arg-type]


def test_crop_zero_is_one_whole_image_window():
    from clipseg.resolve import resolve_config
    from clipseg.windows import plan_windows

    cfg = SegmentConfig.from_flat(crop=0, stride=112, short_side=0)
    assert cfg.window.crop == 0  # stride above a zero crop is not an error: it is unused
    with pytest.raises(InvalidConfigError, match=r"0 \(one window: the whole resized image\)"):
        WindowConfig(crop=8)
    resolved = resolve_config(cfg)
    plan = plan_windows(np.zeros((30, 50, 3), np.float32), resolved.window)
    assert plan.boxes == ((0, 0, 30, 50),)


def test_peer_protocol_options_keep_todays_defaults():
    cfg = SegmentConfig()
    assert cfg.readout.pos_interp == "bilinear" and cfg.window.antialias is True
    assert cfg.window.patch_fit == "resize" and cfg.labels.synonym_reduce == "max_logit"
    assert cfg.refine.pamr_guide == "original"
    with pytest.raises(InvalidConfigError, match="bicubic_scale"):
        cfg.replace(pos_interp="nearest")
    with pytest.raises(InvalidConfigError, match="softmax_then_max"):
        cfg.replace(synonym_reduce="mean")
