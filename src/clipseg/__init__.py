"""clipseg: training-free open-vocabulary semantic segmentation on a frozen open_clip CLIP.

Implements CLIPSeg (Liu et al., AAAI 2025): coherence-enhanced residual attention (CRA) and deep
semantic integration (DSI) in the last block of a CLIP ViT, plus the common training-free
baselines (MaskCLIP, SCLIP, ClearCLIP, NACLIP) as readouts of the same pass.

The engine imports torch, numpy and open_clip only; never Qt or napari.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0.dev0"

_LAZY = {
    "dense_embeddings": "clipseg.features",
    "DenseEncoder": "clipseg.features",
    "Segmenter": "clipseg.pipeline",
    "SegmentationResult": "clipseg.pipeline",
    "Progress": "clipseg.pipeline",
    "segment": "clipseg.pipeline",
    "SegmentConfig": "clipseg.config",
    "ModelConfig": "clipseg.config",
    "ReadoutConfig": "clipseg.config",
    "WindowConfig": "clipseg.config",
    "LabelConfig": "clipseg.config",
    "RefineConfig": "clipseg.config",
    "READOUTS": "clipseg.config",
    "load_model": "clipseg.models",
    "list_models": "clipseg.models",
    "parse_classes": "clipseg.text",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:  # PEP 562: keep `import clipseg` cheap
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipseg' has no attribute {name!r}")
