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


# -- tiny timm ViT towers (open_clip TimmModel), registered with timm's public register_model ----
TIMM_BASE = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
#: timm model name -> VisionTransformer kwargs on top of :data:`TIMM_BASE`.
TIMM_VARIANTS = {
    "clipseg_test_timm_vit": {},  # BiomedCLIP's layout: patch bias, no norm_pre, token pool
    "clipseg_test_timm_vit_clip": {"pre_norm": True, "init_values": 0.5},  # CLIP-like + ls1/ls2
    "clipseg_test_timm_vit_avg": {"global_pool": "avg"},  # fc_norm instead of the final norm
    "clipseg_test_timm_vit_map": {"global_pool": "map"},  # attention pooling: unreadable
    "clipseg_test_timm_vit_reg": {"reg_tokens": 2},  # register tokens: unreadable
    "clipseg_test_timm_vit_qknorm": {"qk_norm": True},  # q/k norm: unreadable
}


def register_tiny_timm(name: str) -> str:
    """Register the tiny timm ViT ``name`` (a key of :data:`TIMM_VARIANTS`) with timm."""
    import timm
    from timm.models import build_model_with_cfg, register_model
    from timm.models.vision_transformer import VisionTransformer

    if timm.is_model(name):
        return name
    args = dict(TIMM_BASE, **TIMM_VARIANTS[name])

    def entrypoint(pretrained=False, **kwargs):
        kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or {"architecture": name}
        return build_model_with_cfg(VisionTransformer, name, pretrained, **dict(args, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    register_model(entrypoint)
    return name


def tiny_timm_config(timm_name: str) -> dict:
    """open_clip config of a CLIP whose image tower is the tiny timm ViT ``timm_name``."""
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "timm_model_name": timm_name,
                       "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear"},
        "text_cfg": dict(TINY_CONFIG["text_cfg"]),
    }


def make_tiny_timm_clip(timm_name: str = "clipseg_test_timm_vit", seed: int = 0):
    """A tiny open_clip CLIP with a timm ViT tower, random weights made test-sensitive.

    Built through open_clip's own ``create_model`` from a registered config named
    ``"clipseg-test-<timm_name>"``. LayerNorm affines, layer-scale gammas, the class token and
    the positions are re-drawn so that mixing them up changes the results.
    """
    register_tiny_timm(timm_name)
    model = make_tiny_clip(name=f"clipseg-test-{timm_name}", seed=seed,
                           config=tiny_timm_config(timm_name))
    trunk = model.visual.trunk
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in trunk.modules():
            if hasattr(module, "gamma") and isinstance(module.gamma, torch.nn.Parameter):
                module.gamma.copy_(torch.rand(module.gamma.shape, generator=gen) * 1.5 + 0.25)
        trunk.cls_token.normal_(0, 0.5, generator=gen)
        trunk.pos_embed.normal_(0, 0.5, generator=gen)
    return model.eval()
