"""Readouts on timm ViT towers (open_clip ``TimmModel``), against references on timm's modules.

The models are tiny random open_clip CLIPs whose ``vision_cfg`` names a tiny timm
``VisionTransformer`` (``tests/tiny_models.py``), built by open_clip's own ``create_model``.
Block inputs ``x_i`` come from timm's own ``forward_intermediates``; everything after that (the
q/k/v rows of the fused ``attn.qkv``, attention, DSI, ``norm``/``head.proj``) is spelled out with
plain torch ops on the timm modules' weights, independently of ``clipseg.readouts``. Then the same
weights mapped into open_clip's own ViT must give the same dense embeddings for every readout.
"""
from __future__ import annotations

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.timm_model import TimmModel
from open_clip.transformer import LayerNorm, VisionTransformer

from clipseg.config import READOUTS, SegmentConfig
from clipseg.errors import UnsupportedModelError
from clipseg.features import dense_embeddings
from clipseg.models import wrap_model
from clipseg.models.towers import tower_for
from clipseg.models.towers.timm_vit import TimmViTTower
from clipseg.pipeline import Segmenter
from tests.core.test_readouts import _sklearn_relation
from tests.tiny_models import make_tiny_timm_clip, register_tiny_timm

ATOL = 2e-5
HEADS, WIDTH = 4, 64
READABLE = ["clipseg_test_timm_vit", "clipseg_test_timm_vit_clip"]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module", params=READABLE)
def setup(request):
    model = make_tiny_timm_clip(request.param)
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        xs = _states(model, px)
    return model, px, xs


# -- the reference, on timm's modules ---------------------------------------------------------
def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _gamma(ls):
    return ls.gamma if hasattr(ls, "gamma") else 1.0


def _qkv(block, x):
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    y = _ln(x, block.norm1)
    return tuple(y @ w[i * WIDTH:(i + 1) * WIDTH].T + b[i * WIDTH:(i + 1) * WIDTH]
                 for i in range(3))


def _ffn_res(block, x):
    mlp = block.mlp
    h = F.gelu(_ln(x, block.norm2) @ mlp.fc1.weight.T + mlp.fc1.bias)
    return x + (h @ mlp.fc2.weight.T + mlp.fc2.bias) * _gamma(block.ls2)


def _out(block, z):
    return z @ block.attn.proj.weight.T + block.attn.proj.bias


def _embed(model, z):
    trunk = model.visual.trunk
    norm = trunk.norm if isinstance(trunk.norm, torch.nn.LayerNorm) else trunk.fc_norm
    return F.normalize(_ln(z, norm) @ model.visual.head.proj.weight.T, dim=-1)


def _split(x):
    b, n, c = x.shape
    return x.reshape(b, n, HEADS, c // HEADS).permute(0, 2, 1, 3)


def _merge(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


def _x0(trunk, px, pos):
    w = trunk.patch_embed.proj.weight
    b = trunk.patch_embed.proj.bias
    x = F.conv2d(px, w, b, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([trunk.cls_token.expand(x.shape[0], 1, -1), x], 1) + pos
    return _ln(x, trunk.norm_pre) if isinstance(trunk.norm_pre, torch.nn.LayerNorm) else x


def _states(model, px):
    """[x_0, ..., x_L], each (B, 1 + P, width); x_i (i >= 1) from timm's own blocks."""
    trunk = model.visual.trunk
    out = model.visual.forward_intermediates(px, output_fmt="NLC", output_extra_tokens=True,
                                             intermediates_only=True)
    rest = [torch.cat([c, p], 1) for c, p in zip(out["image_intermediates_prefix"],
                                                 out["image_intermediates"])]
    return [_x0(trunk, px, trunk.pos_embed[0])] + rest


def _blocks(model):
    return list(model.visual.trunk.blocks)


def _ours(model, px, **kw):
    return dense_embeddings(model, px, **kw).reshape(px.shape[0], -1, 32)


def _paper_ref(model, xs, keys, *, tau=6.0, relation=None, dsi_layers=3, mode="value_mean",
               cls=False, qk=False):
    blocks = _blocks(model)
    last, depth = blocks[-1], len(blocks)
    start = 0 if cls else 1
    if qk:
        q, k, _ = _qkv(last, xs[-2])
        attn = (_split(q[:, start:]) @ _split(k[:, start:]).transpose(-1, -2) * 0.25).softmax(-1)
    else:
        k = F.normalize(keys[:, start:], dim=-1)
        logits = k @ k.transpose(1, 2)
        if relation is not None:
            logits = logits + _sklearn_relation(k, *relation)
        attn = (logits * tau).softmax(-1)
    values = [_qkv(last, xs[depth - 1])[2]]
    for j in range(1, dsi_layers):
        i = depth - j
        values.append(_qkv(last, _ffn_res(blocks[i - 1], xs[i - 1]))[2])
    values = [v[:, start:] for v in values]
    if mode == "value_mean":
        values = [sum(values) / len(values)]

    def apply(v):
        return _merge(attn @ _split(v)) if attn.ndim == 4 else attn @ v

    embs = [_embed(model, _out(last, apply(v)))[:, 1 - start:] for v in values]
    return F.normalize(sum(embs) / len(embs), dim=-1)


def _self_self(x, s, bias=None):
    logits = _split(x) @ _split(x).transpose(-1, -2) * s
    return (logits if bias is None else logits + bias).softmax(-1)


# -- every readout against the reference ------------------------------------------------------
def test_geometry(setup):
    model, _, _ = setup
    tower = tower_for(model)
    assert isinstance(tower, TimmViTTower) and tower.kind == "timm ViT"
    assert (tower.num_layers, tower.width, tower.num_heads, tower.head_dim) == (4, 64, 4, 16)
    assert (tower.patch_size, tower.native_grid, tower.output_dim) == (8, (4, 4), 32)
    assert tower.blocks[0] is model.visual.trunk.blocks[0]


def test_class_token_through_head_is_open_clips_image_embedding(setup):
    model, px, xs = setup
    tower = tower_for(model)
    torch.testing.assert_close(tower.head(xs[-1][:, :1])[:, 0], model.encode_image(px),
                               atol=1e-5, rtol=1e-5)
    x = tower.embed(px)
    torch.testing.assert_close(x, xs[0], atol=1e-5, rtol=1e-5)
    for i in range(1, tower.num_layers + 1):
        x = tower.run_block(i, x)
    torch.testing.assert_close(x, xs[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("min_samples,quantile", [(1, 0.15), (3, 0.2)])
def test_clipseg_cra_dsi(setup, min_samples, quantile):
    model, px, xs = setup
    k_mid = _qkv(_blocks(model)[1], xs[1])[1]  # block M = 2, input x_1
    k = F.normalize(k_mid[:, 1:], dim=-1)
    eps = float(torch.quantile((1 - k @ k.transpose(1, 2)).flatten(), quantile))
    g = _sklearn_relation(k, eps, min_samples)
    assert (g * (1 - torch.eye(16))).sum() > 0 and (g == 0).any()  # G is not trivial here
    ref = _paper_ref(model, xs, k_mid, relation=(eps, min_samples))
    ours = _ours(model, px, method="clipseg", middle_layer=2, eps=eps, min_samples=min_samples)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert not torch.allclose(ours, _paper_ref(model, xs, k_mid), atol=1e-4)


def test_kk_middle_kk_last_qk(setup):
    model, px, xs = setup
    blocks = _blocks(model)
    k_mid = _qkv(blocks[2], xs[2])[1]
    torch.testing.assert_close(_ours(model, px, method="kk_middle", middle_layer=3, tau=4.0),
                               _paper_ref(model, xs, k_mid, tau=4.0), atol=ATOL, rtol=0)
    k_last = _qkv(blocks[-1], xs[-2])[1]
    torch.testing.assert_close(_ours(model, px, method="kk_last"),
                               _paper_ref(model, xs, k_last), atol=ATOL, rtol=0)
    torch.testing.assert_close(_ours(model, px, method="qk"),
                               _paper_ref(model, xs, None, qk=True), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dsi_layers,mode,cls", [(1, "value_mean", False),
                                                 (3, "embedding_mean", False),
                                                 (4, "value_mean", True)])
def test_dsi_variants_and_class_token(setup, dsi_layers, mode, cls):
    model, px, xs = setup
    k_mid = _qkv(_blocks(model)[1], xs[1])[1]
    ref = _paper_ref(model, xs, k_mid, dsi_layers=dsi_layers, mode=mode, cls=cls)
    ours = _ours(model, px, method="kk_middle", middle_layer=2, dsi_layers=dsi_layers,
                 dsi_mode=mode, cls_in_attention=cls)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_maskclip_clearclip_sclip_naclip_vanilla(setup):
    model, px, xs = setup
    last = _blocks(model)[-1]
    q, k, v = _qkv(last, xs[-2])
    refs = {"maskclip": _embed(model, _out(last, v))[:, 1:],
            "clearclip": _embed(model, _out(last, _merge(_self_self(q, 0.25) @ _split(v))))[:, 1:]}
    attn = _self_self(q, 0.25) + _self_self(k, 0.25)
    x = xs[-2] + _out(last, _merge(attn @ _split(v))) * _gamma(last.ls1)
    refs["sclip"] = _embed(model, _ffn_res(last, x))[:, 1:]
    bias = torch.zeros(17, 17)
    for i in range(16):
        for j in range(16):
            d2 = (i // 4 - j // 4) ** 2 + (i % 4 - j % 4) ** 2
            bias[1 + i, 1 + j] = math.exp(-d2 / (2 * 5.0 ** 2))
    refs["naclip"] = _embed(model, _out(last, _merge(_self_self(k, 0.25, bias) @ _split(v))))[:, 1:]
    # vanilla: timm's own forward_features (final norm included), then open_clip's head
    tokens = model.visual.trunk.forward_features(px)
    trunk = model.visual.trunk
    refs["vanilla"] = F.normalize(model.visual.head(trunk.fc_norm(tokens)), dim=-1)[:, 1:]
    for method, ref in refs.items():
        torch.testing.assert_close(_ours(model, px, method=method), ref, atol=ATOL, rtol=0,
                                   msg=lambda m, name=method: f"{name}: {m}")


def test_ffn_residual_uses_layer_scale():
    model = make_tiny_timm_clip("clipseg_test_timm_vit_clip")
    tower = tower_for(model)
    block = model.visual.trunk.blocks[0]
    y = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(3))
    ref = _ffn_res(block, y)
    assert not torch.allclose(ref, y + block.mlp(block.norm2(y)), atol=1e-4)  # gamma matters
    torch.testing.assert_close(tower.ffn_residual(1, y), ref, atol=1e-5, rtol=1e-5)
    ctx = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(tower.attn_residual_branch(1, ctx),
                               _out(block, ctx) * block.ls1.gamma, atol=1e-5, rtol=1e-5)


def test_other_window_size_interpolates_positions():
    model = make_tiny_timm_clip("clipseg_test_timm_vit")
    trunk = model.visual.trunk
    px = torch.randn(1, 3, 48, 41, generator=torch.Generator().manual_seed(5))
    pos = trunk.pos_embed[0]
    grid = pos[1:].reshape(4, 4, -1).permute(2, 0, 1)[None]
    up = F.interpolate(grid, size=(6, 5), mode="bilinear", align_corners=False)
    ref = _x0(trunk, px[..., :40], torch.cat([pos[:1], up[0].flatten(1).T], 0))
    tower = tower_for(model)
    torch.testing.assert_close(tower.embed(px), ref, atol=1e-5, rtol=1e-5)
    assert dense_embeddings(model, px).shape == (1, 6, 5, 32)


def test_avg_pool_tower_reads_fc_norm():
    model = make_tiny_timm_clip("clipseg_test_timm_vit_avg")
    trunk = model.visual.trunk
    assert isinstance(trunk.norm, torch.nn.Identity)
    tower = tower_for(model)
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    x = tower.embed(px)
    for i in range(1, tower.num_layers + 1):
        x = tower.run_block(i, x)
    # timm pools the patch tokens before fc_norm and the projection: compare on the pooled
    # token, which the per-token head must map to open_clip's image embedding
    pooled = x[:, 1:].mean(dim=1, keepdim=True)
    torch.testing.assert_close(tower.head(pooled)[:, 0], model.encode_image(px),
                               atol=1e-5, rtol=1e-5)
    xs = _states(model, px)
    torch.testing.assert_close(_ours(model, px, method="maskclip"),
                               _embed(model, _out(trunk.blocks[-1],
                                                  _qkv(trunk.blocks[-1], xs[-2])[2]))[:, 1:],
                               atol=ATOL, rtol=0)


# -- the same weights in open_clip's own ViT ---------------------------------------------------
def _as_open_clip(model) -> VisionTransformer:
    """open_clip's ViT holding the weights of the CLIP-like tiny timm tower."""
    trunk, proj = model.visual.trunk, model.visual.head.proj
    vit = VisionTransformer(image_size=32, patch_size=8, width=64, layers=4, heads=4,
                            mlp_ratio=2.0, ls_init_value=0.5, output_dim=32,
                            norm_layer=partial(LayerNorm, eps=1e-6)).eval()
    state = {"conv1.weight": trunk.patch_embed.proj.weight,
             "class_embedding": trunk.cls_token[0, 0], "positional_embedding": trunk.pos_embed[0],
             "ln_pre.weight": trunk.norm_pre.weight, "ln_pre.bias": trunk.norm_pre.bias,
             "ln_post.weight": trunk.norm.weight, "ln_post.bias": trunk.norm.bias,
             "proj": proj.weight.T}
    pairs = {"ln_1": "norm1", "attn.out_proj": "attn.proj", "ln_2": "norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i, block in enumerate(trunk.blocks):
        own = dict(block.named_parameters())
        pre = f"transformer.resblocks.{i}."
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                state[pre + f"{ours}.{p}"] = own[f"{theirs}.{p}"]
        state[pre + "attn.in_proj_weight"] = own["attn.qkv.weight"]
        state[pre + "attn.in_proj_bias"] = own["attn.qkv.bias"]
        state[pre + "ls_1.gamma"] = own["ls1.gamma"]
        state[pre + "ls_2.gamma"] = own["ls2.gamma"]
    vit.load_state_dict(state, strict=True)
    return vit


@pytest.fixture(scope="module")
def twins():
    model = make_tiny_timm_clip("clipseg_test_timm_vit_clip", seed=2)
    return model, _as_open_clip(model)


@pytest.mark.parametrize("method", READOUTS)
@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_same_weights_in_open_clips_vit_give_the_same_embeddings(twins, method, size):
    timm_model, own = twins
    assert type(tower_for(own)).__name__ == "OpenClipViTTower"
    px = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
    options = {"eps": 0.5, "min_samples": 2} if method == "clipseg" else {}
    ours = dense_embeddings(timm_model, px, method=method, **options)
    theirs = dense_embeddings(own, px, method=method, **options)
    assert ours.shape == (2, size[0] // 8, size[1] // 8, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_open_clip_twin_is_the_same_network(twins):
    timm_model, own = twins
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(own(px), timm_model.encode_image(px), atol=1e-5, rtol=1e-5)


# -- wrapping and the pipeline -------------------------------------------------------------------
def test_wrap_model_and_segment_with_a_timm_tower():
    model = make_tiny_timm_clip("clipseg_test_timm_vit")
    loaded = wrap_model(model, name="my-timm-clip")
    assert (loaded.entry.middle_layer, loaded.entry.crop) == (2, 32)
    config = SegmentConfig().replace(model="my-timm-clip", short_side=None, crop=32, stride=16)
    segmenter = Segmenter(config, model=loaded, templates=("{}",))
    image = np.random.default_rng(0).integers(0, 256, (40, 58, 3), dtype=np.uint8)
    result = segmenter.segment(image, "cat, dog, sky")
    assert result.labels.shape == (40, 58)
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3}


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant, says", [
    ("clipseg_test_timm_vit_map", "no attention pooling"),
    ("clipseg_test_timm_vit_reg", "no register/distillation tokens"),
    ("clipseg_test_timm_vit_qknorm", "without q/k normalisation"),
])
def test_unreadable_timm_vits_are_refused(variant, says):
    model = make_tiny_timm_clip(variant)
    with pytest.raises(UnsupportedModelError, match=says) as info:
        tower_for(model)
    assert "timm VisionTransformer" in str(info.value)


def test_convnext_tower_is_refused_naming_what_is_supported():
    visual = TimmModel("convnext_atto", embed_dim=16, pool="avg", proj="linear")
    with pytest.raises(UnsupportedModelError) as info:
        tower_for(visual)
    message = str(info.value)
    assert "TimmModel around ConvNeXt" in message
    assert "open_clip VisionTransformer" in message and "timm VisionTransformer" in message


def test_drop_path_in_train_mode_is_refused():
    visual = TimmModel(register_tiny_timm("clipseg_test_timm_vit"), embed_dim=32, pool="",
                       proj="linear", drop_path=0.1).eval()
    tower = tower_for(visual)
    assert tower.embed(torch.zeros(1, 3, 32, 32)).shape == (1, 17, 64)
    visual.train()
    with pytest.raises(UnsupportedModelError, match=r"call model\.eval\(\)"):
        tower.embed(torch.zeros(1, 3, 32, 32))


def test_a_non_linear_head_is_refused():
    model = copy.deepcopy(make_tiny_timm_clip("clipseg_test_timm_vit"))
    model.visual.head.add_module("pool", torch.nn.AdaptiveAvgPool1d(32))
    with pytest.raises(UnsupportedModelError, match="per-token head"):
        tower_for(model)
