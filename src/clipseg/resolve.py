"""One place where a configuration meets a model: registry defaults, the user's overrides, checks.

Every caller (``Segmenter``, tiled and Dask runs of the command line, ``clipseg evaluate`` and
``clipseg calibrate``, the napari widget) resolves through :func:`resolve_config`, so one model
gets the same window, resize, middle layer and logit scale wherever it runs.
"""
from __future__ import annotations

from typing import Any

from .config import SegmentConfig
from .errors import InvalidConfigError

__all__ = ["resolve_config", "MODEL_DEFAULTS"]

#: The options whose ``None`` means "the model's registry value", with the entry attribute
#: that supplies it.
MODEL_DEFAULTS: dict[str, str] = {
    "middle_layer": "middle_layer",
    "crop": "crop",
    "stride": "stride",
    "short_side": "short_side",
    "logit_scale": "logit_scale",
}


def resolve_config(config: SegmentConfig, entry: Any | None = None, *,
                   num_layers: int | None = None) -> SegmentConfig:
    """``config`` with every model-dependent ``None`` filled in from the model's entry.

    Parameters
    ----------
    config : SegmentConfig
        The user's options; explicit values always win over the entry's.
    entry : ModelEntry or None
        The model's registry entry (:func:`clipseg.models.entry_for`); None looks it up from
        ``config.model`` (no weights are loaded).
    num_layers : int or None
        Depth L of the vision tower, when known (a loaded model): ``middle_layer`` and
        ``dsi_layers`` are checked against it.

    Returns
    -------
    SegmentConfig
        No ``None`` left in ``middle_layer``, ``crop``, ``stride``, ``short_side`` and
        ``logit_scale``; ``short_side`` 0 means the original size.

    Raises
    ------
    InvalidConfigError
        ``stride`` above ``crop`` once both are known, or a layer beyond the tower's depth.
    """
    if not isinstance(config, SegmentConfig):
        raise InvalidConfigError(f"config: expected a SegmentConfig, got {type(config).__name__}")
    if entry is None:
        from .models.registry import entry_for

        entry = entry_for(config.model)
    flat = config.to_flat()
    changes = {name: getattr(entry, attr) for name, attr in MODEL_DEFAULTS.items()
               if flat[name] is None}
    if changes.get("short_side") is None and "short_side" in changes:
        changes["short_side"] = 0
    try:
        resolved = config.replace(**changes)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"model {entry.key!r}: its defaults do not fit the options "
                                 f"given: {exc}") from exc
    window = resolved.window
    if window.crop != 0 and window.stride > window.crop:  # crop 0: one whole-image window
        raise InvalidConfigError(f"stride: expected at most crop ({window.crop}) so windows "
                                 f"cover the image, got {window.stride}")
    if num_layers is not None:
        readout = resolved.readout
        if not 1 <= readout.middle_layer <= num_layers:
            raise InvalidConfigError(
                f"middle_layer: expected a block number in 1..{num_layers} ({entry.key} has "
                f"{num_layers} blocks, counted from 1), got {readout.middle_layer}")
        if readout.dsi_layers > num_layers:
            raise InvalidConfigError(
                f"dsi_layers: expected at most {num_layers} (the depth of {entry.key}), got "
                f"{readout.dsi_layers}")
    return resolved


def is_resolved(config: SegmentConfig) -> bool:
    """Whether no model-dependent option is left at ``None``."""
    flat = config.to_flat()
    return all(flat[name] is not None for name in MODEL_DEFAULTS)

