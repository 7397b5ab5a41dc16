"""Former home of the ViT view; the tower views now live in :mod:`clipseg.models.towers`.

Kept as an import path: ``VisionTower`` (the interface, whose ``from_model`` picks the
implementation) and ``interpolate_pos_embed``.
"""
from __future__ import annotations

from .towers import VisionTower, interpolate_pos_embed

__all__ = ["VisionTower", "interpolate_pos_embed"]
