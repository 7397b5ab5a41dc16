"""Command-line flags mirror SegmentConfig: generated from flat_fields(), parsed back exactly."""
from __future__ import annotations

import json

import pytest

from clipseg.apps.cli import EXIT_USAGE, build_parser, config_from_args, main
from clipseg.config import SegmentConfig


def _parse(*flags):
    return build_parser().parse_args(["segment", "x.png", "--classes", "a", "-o", "out", *flags])


def test_every_config_field_has_a_flag():
    text = build_parser()._subparsers._group_actions[0].choices["segment"].format_help()
    for name in SegmentConfig.flat_fields():
        assert "--" + name.replace("_", "-") in text, name


def test_no_flags_give_the_default_config():
    assert config_from_args(_parse()) == SegmentConfig()


def test_flags_of_every_kind_parse_into_the_config():
    args = _parse("--tau", "5", "--no-relation", "--pamr", "--pamr-dilations", "1", "2",
                  "--short-side", "0", "--crop", "64", "--stride", "32", "--method", "naclip",
                  "--class-thresholds", "a=0.3", "b c=0.5", "--middle-layer", "3",
                  "--checkpoint", "w.safetensors", "--device", "cpu")
    expected = SegmentConfig.from_flat(
        tau=5.0, relation=False, pamr=True, pamr_dilations=(1, 2), short_side=0, crop=64,
        stride=32, method="naclip", class_thresholds={"a": 0.3, "b c": 0.5}, middle_layer=3,
        checkpoint="w.safetensors", device="cpu")
    assert config_from_args(args) == expected


def test_config_file_then_flags(tmp_path):
    side = {"version": 1, "classes": [], "config": SegmentConfig().replace(tau=3.0, eps=0.5)
            .to_flat()}
    (tmp_path / "s.clipseg.json").write_text(json.dumps(side))
    cfg = config_from_args(_parse("--config", str(tmp_path / "s.clipseg.json"), "--eps", "0.6"))
    assert (cfg.readout.tau, cfg.readout.eps) == (3.0, 0.6)


def test_bad_values_exit_2_with_the_reason(tmp_path, capsys):
    code = main(["segment", str(tmp_path / "x.png"), "--classes", "a", "-o", str(tmp_path),
                 "--tau", "-1"])
    assert code == EXIT_USAGE
    assert "tau" in capsys.readouterr().err
    assert main(["segment", "x.png", "-o", str(tmp_path)]) == EXIT_USAGE  # no classes
    assert main(["segment", str(tmp_path / "x.png"), "--classes", "a, a", "-o",
                 str(tmp_path)]) == EXIT_USAGE  # duplicate class
    assert main(["segment", str(tmp_path / "x.png"), "--classes", "a, b", "-o", str(tmp_path),
                 "--class-thresholds", "c=0.5"]) == EXIT_USAGE  # threshold of no class
    assert "--class-thresholds" in capsys.readouterr().err


def test_model_config_files_are_checked(tmp_path, tiny_model_name, capsys):
    from clipseg.errors import InvalidConfigError
    from clipseg.models.arch_configs import register_model_configs
    from tests.tiny_models import TINY_CONFIG

    same = tmp_path / f"{tiny_model_name}.json"
    same.write_text(json.dumps(TINY_CONFIG))
    assert register_model_configs([same]) == [tiny_model_name]  # identical: accepted again
    other = tmp_path / "other" / f"{tiny_model_name}.json"
    other.parent.mkdir()
    other.write_text(json.dumps({**TINY_CONFIG, "embed_dim": 16}))
    with pytest.raises(InvalidConfigError, match="different"):
        register_model_configs([other])
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 3}))
    with pytest.raises(InvalidConfigError, match="vision_cfg"):
        register_model_configs([tmp_path / "bad.json"])


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "segment" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--help"], ["batch", "--help"],
                                  ["evaluate", "--help"], ["calibrate", "--help"],
                                  ["export", "--help"],
                                  ["export", "nowhere", "-o", "out"],
                                  ["segment", "x.png", "--classes", "a", "-o", "out",
                                   "--tau", "-1"],
                                  ["segment", "--no-such-flag"]])
def test_parsing_and_option_errors_import_neither_torch_nor_open_clip(argv, tmp_path):
    from tests.cli.conftest import main_in_fresh_python

    out, err = main_in_fresh_python(argv, cwd=tmp_path)
    assert "HEAVY []" in out, out + err
    assert ("RC 0" if "--help" in argv else "RC 2") in out
