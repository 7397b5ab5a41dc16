"""Tiny open_clip architectures for tests and benchmarks (random weights, built in-process).

The config is registered with open_clip through its public ``add_model_config`` so the normal
``open_clip.create_model`` / ``get_tokenizer`` paths (the ones the engine uses) are exercised.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch

TINY_NAME = "clipseg-test-tiny"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

_registered: set[str] = set()


def register_tiny_config(name: str = TINY_NAME, config: dict | None = None) -> str:
    """Register ``config`` (default :data:`TINY_CONFIG`) with open_clip under ``name``."""
    if name in _registered and name in open_clip.list_models():
        return name
    folder = Path(tempfile.mkdtemp(prefix="clipseg-cfg-"))
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config or TINY_CONFIG))
    open_clip.add_model_config(path)
    _registered.add(name)
    return name


def make_tiny_clip(name: str = TINY_NAME, seed: int = 0, config: dict | None = None):
    """Build the tiny model with deterministic random weights, eval mode, fp32, CPU."""
    register_tiny_config(name, config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    # open_clip zero-inits nothing that matters here, but random LayerNorm affine makes the
    # tests sensitive to ln_1/ln_2/ln_post mix-ups, which is what we want.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()
