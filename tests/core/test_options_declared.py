"""Every option is declared once, on its field; validation, flags and docs come from that."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from clipseg.apps.cli import build_parser
from clipseg.apps.cliopts import add_config_arguments, config_from_args
from clipseg.config import (
    ReadoutConfig,
    SegmentConfig,
    WindowConfig,
    option,
    option_specs,
    validate_fields,
)
from clipseg.errors import InvalidConfigError


def _segment_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["segment"]


def test_every_field_is_declared_with_help_and_a_known_place():
    specs = option_specs()
    assert set(specs) == set(SegmentConfig.flat_fields())
    for spec in specs.values():
        assert spec.help.strip().endswith("."), spec.name
        assert spec.widget in ("main", "advanced", "hidden")
        if spec.optional and spec.default is None:
            assert spec.none, f"{spec.name}: None is its default, so say what None means"


def test_each_option_has_its_generated_flag_with_its_help_and_choices():
    actions = {a.dest: a for a in _segment_parser()._actions}
    for spec in option_specs().values():
        action = actions[f"cfg_{spec.name}"]
        assert spec.flag in action.option_strings
        assert spec.help.replace("%", "%%") in action.help
        if spec.choices and spec.checked:  # the option's own check decides (cuda:N)
            assert action.choices is None and all(c in action.metavar for c in spec.choices)
        elif spec.choices:
            assert tuple(action.choices) == spec.choices


def test_an_option_with_its_own_check_takes_more_than_its_listed_choices():
    from clipseg.apps.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["segment", "a.png", "--classes", "a, b", "-o", "o",
                              "--device", "cuda:1"])
    assert config_from_args(args).model.device == "cuda:1"
    args = parser.parse_args(["segment", "a.png", "--classes", "a, b", "-o", "o",
                              "--device", "gpu"])
    with pytest.raises(InvalidConfigError, match="device: expected one of auto, cpu, cuda, "
                                                 "mps or 'cuda:N', got 'gpu'"):
        config_from_args(args)


@pytest.mark.parametrize("argv, name, bad", [
    (["--tau", "0"], "tau", "> 0"), (["--eps", "2.5"], "eps", "<= 2"),
    (["--batch-size", "0"], "batch_size", ">= 1"), (["--short-side", "8"], "short_side", "0"),
])
def test_bounds_declared_on_the_field_reject_bad_flags(argv, name, bad):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    with pytest.raises(InvalidConfigError, match=f"{name}: expected .*{bad}"):
        config_from_args(parser.parse_args(argv))


def test_none_word_selects_the_model_value_and_zero_the_original_size():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--short-side", "0", "--crop", "none"]))
    assert cfg.window.short_side == 0 and cfg.window.crop is None


def test_a_new_declared_option_is_validated_and_gets_a_flag_without_other_edits():
    @dataclasses.dataclass(frozen=True)
    class Extra:
        level: int = option(3, low=1, high=5, help="A made-up option for this test.")

        def __post_init__(self) -> None:
            validate_fields(self)

    with pytest.raises(InvalidConfigError, match="level: expected an integer <= 5, got 9"):
        Extra(level=9)
    with pytest.raises(InvalidConfigError, match="level: expected an integer"):
        Extra(level=2.5)
    assert Extra().level == 3


def test_undeclared_fields_are_refused_by_the_reflection():
    from clipseg.config import _specs_of

    @dataclasses.dataclass(frozen=True)
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match="not declared with option"):
        _specs_of(Plain, "test")


def test_group_validation_comes_from_the_declarations():
    with pytest.raises(InvalidConfigError, match="method: expected one of clipseg"):
        ReadoutConfig(method="nope")
    with pytest.raises(InvalidConfigError, match="stride: expected at most crop"):
        WindowConfig(crop=32, stride=64)
