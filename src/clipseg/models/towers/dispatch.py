"""Pick the tower implementation for a model: :func:`tower_for`."""
from __future__ import annotations

from typing import Any

from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from torch import nn

from ...errors import describe
from .base import VisionTower, unsupported

__all__ = ["tower_for"]


def tower_for(model: Any) -> VisionTower:
    """The :class:`~.base.VisionTower` of ``model``.

    Parameters
    ----------
    model : open_clip CLIP, its ``.visual``, an object with a ``.model`` CLIP (a LoadedModel),
        or a VisionTower (returned as is).

    Raises
    ------
    UnsupportedModelError
        When the image tower is none of :data:`~.base.SUPPORTED_TOWERS` (ConvNeXt, ResNet,
        attention-pooled towers, ...); the message names what is supported.
    """
    if isinstance(model, VisionTower):
        return model
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model  # a LoadedModel-like wrapper
    visual = model if isinstance(model, (VisionTransformer, TimmModel)) else \
        getattr(model, "visual", None)
    if visual is None:
        raise unsupported("a CLIP model with a .visual tower", describe(model))
    if isinstance(visual, TimmModel):
        from .timm_vit import TimmViTTower  # imports timm only for timm towers
        return TimmViTTower(visual)
    from .openclip_vit import OpenClipViTTower
    return OpenClipViTTower(visual)
