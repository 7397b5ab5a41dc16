"""napari plugin for clipseg: a thin adapter over the engine (:mod:`clipseg`).

Contributions (see ``napari.yaml``): the dock widget :class:`~napari_clipseg.widget.ClipSegWidget`,
the dataset review widget :class:`~napari_clipseg.review.panel.ReviewWidget`,
a reader and a writer for label images with class-name sidecars
(:mod:`clipseg.formats.io`), and offline
sample data. Dependencies point one way: this package imports the engine, never the reverse.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from ._llvm_guard import guard as _guard_llvm

# Must run before anything here imports torch/open_clip: see _llvm_guard for the crash it avoids.
_guard_llvm()

from clipseg import __version__  # noqa: E402  (one version: src/clipseg/__init__.py)

_LAZY = {
    "ClipSegWidget": "napari_clipseg.widget",
    "ReviewWidget": "napari_clipseg.review.panel",
    "Session": "napari_clipseg.job",
    "apply_result": "napari_clipseg.apply",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:  # keep `import napari_clipseg` free of Qt
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_clipseg' has no attribute {name!r}")
