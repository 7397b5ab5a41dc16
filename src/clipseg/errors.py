"""Exceptions raised by the engine.

Every message says what was expected, what arrived and, where it helps, what to do.
All inherit from :class:`ClipSegError` so callers (the widget, the CLI) can catch one type.
"""
from __future__ import annotations


class ClipSegError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(ClipSegError, ValueError):
    """An image, class list or other argument is not what the engine accepts."""


class InvalidConfigError(ClipSegError, ValueError):
    """A configuration field holds a value outside its valid range or set."""


class ModelLoadError(ClipSegError, RuntimeError):
    """Weights or a model architecture could not be loaded."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint would need to unpickle code to load; it is refused."""


class UnsupportedModelError(ClipSegError, TypeError):
    """The model object is not an open_clip ViT the engine can read."""


def describe(value: object) -> str:
    """Short description of a value for error messages (type, shape, dtype)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
