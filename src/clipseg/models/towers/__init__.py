"""Read-only tower views: one interface (:class:`VisionTower`), one implementation per tower.

- :class:`~.openclip_vit.OpenClipViTTower`: open_clip's own ``VisionTransformer``;
- :class:`~.timm_vit.TimmViTTower`: a timm ``VisionTransformer`` inside open_clip's
  ``TimmModel`` (BiomedCLIP and other ``timm_model_name`` configs).

``tower_for(model)`` picks the implementation; the readouts only use the interface.
"""
from __future__ import annotations

from .base import POS_INTERP_MODES, SUPPORTED_TOWERS, VisionTower, interpolate_pos_embed
from .dispatch import tower_for

__all__ = ["VisionTower", "tower_for", "interpolate_pos_embed", "POS_INTERP_MODES",
           "SUPPORTED_TOWERS"]
