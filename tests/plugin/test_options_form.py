"""The widget's settings form is generated from the option declarations."""
from __future__ import annotations

import dataclasses

import pytest

from clipseg.config import SegmentConfig, option_specs
from napari_clipseg import options_form
from napari_clipseg.options_form import OptionsForm

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("place", ["main", "advanced"])
def test_every_declared_option_of_a_place_has_a_control_with_its_help(qtbot, place):
    form = OptionsForm(place)
    wanted = [n for n, s in option_specs().items() if s.widget == place]
    assert form.names == wanted and wanted
    for name in wanted:
        assert form.widget(name).tooltip.startswith(option_specs()[name].help)


def test_untouched_forms_give_the_default_config(qtbot):
    options = {**OptionsForm("main").values(), **OptionsForm("advanced").values()}
    assert SegmentConfig.from_flat(options) == SegmentConfig()


def test_values_round_trip_including_the_model_value_and_original_size(qtbot):
    form = OptionsForm("advanced")
    wanted = {"crop": 64, "stride": None, "short_side": 0, "tau": 5.5, "relation": False,
              "dsi_mode": "embedding_mean", "pamr_dilations": (1, 2, 4), "logit_scale": 50.0,
              "middle_layer": None}
    form.set_values(wanted)
    got = form.values()
    assert {k: got[k] for k in wanted} == wanted
    form.set_values({"middle_layer": 7, "crop": None})
    assert form.values()["middle_layer"] == 7 and form.values()["crop"] is None
    crop = form.widget("crop").native           # the lowest position reads the None meaning
    assert crop.value() == crop.minimum() and crop.specialValueText() == option_specs()["crop"].none


def test_declared_bounds_limit_the_spin_boxes(qtbot):
    form = OptionsForm("advanced")
    eps = form.widget("eps")
    eps.native.setValue(5.0)                        # declared high = 2: Qt clamps
    assert form.values()["eps"] == 2.0
    with pytest.raises(ValueError):
        form.widget("batch_size").value = 0         # declared low = 1
    assert form.widget("batch_size").min == 1


def test_a_newly_declared_option_appears_with_no_edit_of_the_form(qtbot, monkeypatch):
    base = option_specs()
    extra = dataclasses.replace(base["tau"], name="new_knob", label="new knob", default=2.0,
                                help="A knob declared only on its field.")
    monkeypatch.setattr(options_form, "option_specs", lambda: {**base, "new_knob": extra})
    form = OptionsForm("advanced")
    assert "new_knob" in form.names and form.values()["new_knob"] == 2.0
    assert form.widget("new_knob").tooltip.startswith("A knob declared only on its field.")


def test_changes_are_reported_by_name(qtbot):
    form = OptionsForm("main")
    seen = []
    form.on_change(seen.append)
    form.widget("threshold").value = 0.4
    form.widget("pamr").value = True
    assert seen == ["threshold", "pamr"]
