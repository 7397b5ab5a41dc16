"""The widget's settings form, generated with magicgui from the option declarations.

Each declared option (:func:`clipseg.config.option_specs`) whose ``widget`` place is ``main``
or ``advanced`` gets one control here: a check box for on/off options, a spin box for numbers
(with the declared bounds and step), a combo box for choices, a text field for lists of
integers. The tooltip is the option's help text, the label its declared label. An option whose
``None`` means "the model's value" gets a spin box whose lowest position reads that meaning, so
a new declared option appears in the widget with no edit here.

The controls are magicgui widgets; their Qt widgets are laid out in a ``QFormLayout`` so a
panel can put its own rows (model, device) in the same form and the labels line up.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QFormLayout, QWidget

from clipseg.config import OptionSpec, option_specs

__all__ = ["OptionsForm", "control_for"]

_INT_MAX = 1_000_000
_FLOAT_MAX = 1e6


class _Control:
    """One magicgui widget and the conversion between its value and the option's."""

    def __init__(self, spec: OptionSpec) -> None:
        self.spec = spec
        self.sentinel: float | None = None
        kind = spec.kind
        common = {"label": spec.label, "tooltip": _tooltip(spec)}
        if kind == "bool":
            self.widget = CheckBox(value=bool(spec.default), text=spec.label,
                                   tooltip=common["tooltip"])
            self.widget.label = ""
        elif spec.choices:
            self.widget = ComboBox(choices=list(spec.choices), value=spec.default, **common)
        elif kind in ("int", "float"):
            self.widget = self._spin(spec, common)
        elif kind == "ints":
            self.widget = LineEdit(value=" ".join(str(v) for v in spec.default), **common)
        else:
            self.widget = LineEdit(value="" if spec.default is None else str(spec.default),
                                   **common)

    def _spin(self, spec: OptionSpec, common: dict[str, Any]) -> Any:
        integer = spec.kind == "int"
        low = spec.low if spec.low is not None else (-_INT_MAX if integer else -_FLOAT_MAX)
        high = spec.high if spec.high is not None else (_INT_MAX if integer else _FLOAT_MAX)
        step = spec.step or (1 if integer else 0.05)
        if spec.optional:  # the lowest position stands for None ("the model's value")
            if spec.low_open:
                self.sentinel = low
            elif low > 0:
                self.sentinel = max(low - step, 0)
            else:
                self.sentinel = low - 1
            low = self.sentinel
        elif spec.low_open:
            low = low + (1 if integer else step / 100)
        # An optional integer uses a (0-decimal) float spin box: magicgui's integer spin box
        # (superqt's QLargeIntSpinBox) cannot show a special text at its lowest position.
        cls = SpinBox if integer and not spec.optional else FloatSpinBox
        value = self.sentinel if spec.default is None else spec.default
        widget = cls(value=value, min=low, max=high, step=step, **common)
        if self.sentinel is not None:
            widget.native.setSpecialValueText(spec.none or "none")
        if cls is FloatSpinBox:
            widget.native.setDecimals(0 if integer else _decimals(step))
        return widget

    def get(self) -> Any:
        value = self.widget.value
        if self.spec.kind == "ints":
            return tuple(int(v) for v in str(value).replace(",", " ").split())
        if self.sentinel is not None and value <= self.sentinel:
            return None
        if self.spec.kind == "float":
            return round(float(value), 6)
        if self.spec.kind == "int":
            return int(round(value))
        if self.spec.kind == "str" and not self.spec.choices:
            return str(value).strip() or None
        return value

    def set(self, value: Any) -> None:
        if self.spec.kind == "ints":
            self.widget.value = " ".join(str(v) for v in value)
        elif value is None and self.sentinel is not None:
            self.widget.value = self.sentinel
        elif self.spec.kind == "str" and not self.spec.choices:
            self.widget.value = "" if value is None else str(value)
        else:
            self.widget.value = value


def _decimals(step: float) -> int:
    text = f"{step:g}"
    return max(2, len(text.split(".")[1]) if "." in text else 0)


def _tooltip(spec: OptionSpec) -> str:
    text = spec.help
    if spec.unit:
        text += f" (in {spec.unit})"
    return text


def control_for(spec: OptionSpec) -> Any:
    """The magicgui widget the form makes for ``spec`` (for tests and custom layouts)."""
    return _Control(spec).widget


class OptionsForm:
    """magicgui controls for the declared options of one widget place.

    Parameters
    ----------
    place : {"main", "advanced"}
        Which options: those declared with this ``widget`` place.
    skip : iterable of str
        Options the panel shows with a control of its own.
    """

    def __init__(self, place: str, *, skip: Iterable[str] = ()) -> None:
        skip = set(skip)
        self._controls = {name: _Control(spec) for name, spec in option_specs().items()
                          if spec.widget == place and name not in skip}
        self._native: QWidget | None = None

    def add_rows(self, layout: QFormLayout) -> None:
        """Add one row per control to ``layout`` (a check box carries its own label)."""
        for control in self._controls.values():
            native = control.widget.native
            if control.spec.kind == "bool":
                layout.addRow("", native)
            else:
                layout.addRow(control.spec.label, native)

    @property
    def native(self) -> QWidget:
        """A Qt widget holding the controls in a form of their own."""
        if self._native is None:
            self._native = QWidget()
            layout = QFormLayout(self._native)
            layout.setContentsMargins(0, 0, 0, 0)
            self.add_rows(layout)
        return self._native

    @property
    def names(self) -> list[str]:
        """The options this form shows, in declaration order."""
        return list(self._controls)

    def widget(self, name: str) -> Any:
        """The magicgui widget of option ``name``."""
        return self._controls[name].widget

    def values(self) -> dict[str, Any]:
        """The flat options the controls set (validated by ``SegmentConfig.from_flat``)."""
        return {name: control.get() for name, control in self._controls.items()}

    def set_values(self, options: dict[str, Any]) -> None:
        """Show ``options`` (flat names; those this form does not have are ignored)."""
        for name, value in options.items():
            if name in self._controls:
                self._controls[name].set(value)

    def set_none_text(self, name: str, text: str) -> None:
        """What the lowest position of option ``name``'s spin box reads (its ``None``)."""
        control = self._controls.get(name)
        if control is not None and control.sentinel is not None:
            control.widget.native.setSpecialValueText(text)

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(name)`` whenever the person changes a control."""
        for name, control in self._controls.items():
            control.widget.changed.connect(lambda *_, n=name: callback(n))
