"""CLIP backbones: the registry of per-model defaults, weight loading, the ViT view.

This package is the only part of the engine that knows open_clip internals.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .loading import (
    LoadedModel,
    load_checkpoint_safely,
    load_model,
    resolve_device,
    resolve_precision,
    weights_available,
    wrap_model,
)
from .registry import ModelEntry, get_entry, list_models, register_model, synthesise_entry

__all__ = ["ModelEntry", "get_entry", "list_models", "register_model", "synthesise_entry",
           "LoadedModel", "load_model", "wrap_model", "load_checkpoint_safely",
           "resolve_device", "resolve_precision", "weights_available", "VisionTower",
           "interpolate_pos_embed"]

_LAZY = {"VisionTower": ".towers", "interpolate_pos_embed": ".towers"}


def __getattr__(name: str) -> Any:  # PEP 562: the ViT view is imported on first use
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
