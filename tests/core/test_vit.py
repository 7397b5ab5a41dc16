"""VisionTower: geometry, written-out embedding / q-k-v / head, interpolation, refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from clipseg.errors import InvalidInputError, UnsupportedModelError
from clipseg.features import dense_embeddings
from clipseg.models.towers import interpolate_pos_embed, tower_for


def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _embed_by_hand(visual, px, pos):
    """conv1 -> tokens, class token first, + pos, ln_pre; written out from the raw weights."""
    w = visual.conv1.weight
    x = F.conv2d(px, w, stride=w.shape[-1])  # (B, C, h, w)
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + pos
    return _ln(x, visual.ln_pre)


def _small_vit(**kw):
    torch.manual_seed(1)
    args = dict(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0,
                output_dim=16)
    args.update(kw)
    return VisionTransformer(**args).eval()


def test_geometry(tiny_clip):
    tower = tower_for(tiny_clip)
    assert (tower.num_layers, tower.width, tower.num_heads, tower.head_dim) == (4, 64, 4, 16)
    assert (tower.patch_size, tower.native_grid, tower.output_dim) == (8, (4, 4), 32)
    assert tower.blocks[0] is tiny_clip.visual.transformer.resblocks[0]
    assert tower.grid_for(48, 40) == (6, 5)
    assert tower.grid_for(63, 8) == (7, 1)
    with pytest.raises(InvalidInputError, match=r"at least one patch \(8 px\), got 7x32"):
        tower.grid_for(7, 32)


def test_pos_embed_identity_at_native_size(tiny_clip):
    pos = tiny_clip.visual.positional_embedding
    assert interpolate_pos_embed(pos, (4, 4), (4, 4)) is pos


def test_pos_embed_bilinear_matches_f_interpolate(rng):
    pos = torch.randn(1 + 4 * 4, 8, generator=rng)
    out = interpolate_pos_embed(pos, (4, 4), (6, 5))
    assert out.shape == (1 + 30, 8)
    assert torch.equal(out[0], pos[0])
    grid = pos[1:].reshape(4, 4, 8).permute(2, 0, 1)[None]
    ref = F.interpolate(grid, size=(6, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[1:], ref[0].permute(1, 2, 0).reshape(30, 8))
    # a constant field stays constant; a non-square source grid works too
    const = torch.ones(1 + 3 * 5, 2)
    torch.testing.assert_close(interpolate_pos_embed(const, (3, 5), (7, 2)), torch.ones(15, 2))


def test_pos_embed_rejects_wrong_shape():
    with pytest.raises(InvalidInputError, match="1 \\+ 4\\*4"):
        interpolate_pos_embed(torch.zeros(10, 4), (4, 4), (2, 2))


def test_embed_native_and_non_square(tiny_clip, rng):
    visual = tiny_clip.visual
    tower = tower_for(tiny_clip)
    px = torch.randn(2, 3, 32, 32, generator=rng)
    with torch.no_grad():
        ours = tower.embed(px)
        ref = _embed_by_hand(visual, px, visual.positional_embedding)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)

    px = torch.randn(1, 3, 48, 40, generator=rng)
    with torch.no_grad():
        ours = tower.embed(px)
        grid = visual.positional_embedding[1:].reshape(4, 4, -1).permute(2, 0, 1)[None]
        up = F.interpolate(grid, size=(6, 5), mode="bilinear", align_corners=False)
        pos = torch.cat([visual.positional_embedding[:1], up[0].flatten(1).T], dim=0)
        ref = _embed_by_hand(visual, px, pos)
    assert ours.shape == (1, 31, 64)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert dense_embeddings(tiny_clip, px).shape == (1, 6, 5, 32)


def test_qkv_ffn_head_written_out(tiny_clip, rng):
    tower = tower_for(tiny_clip)
    x = torch.randn(2, 17, 64, generator=rng)
    block = tiny_clip.visual.transformer.resblocks[2]
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    y = _ln(x, block.ln_1)
    with torch.no_grad():
        q, k, v = tower.qkv(3, x)
        torch.testing.assert_close(q, y @ w[:64].T + b[:64])
        torch.testing.assert_close(k, y @ w[64:128].T + b[64:128])
        torch.testing.assert_close(v, y @ w[128:].T + b[128:])
        h = F.gelu(_ln(x, block.ln_2) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias)
        ffn = x + h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias
        torch.testing.assert_close(tower.ffn_residual(3, x), ffn, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tower.run_block(3, x), block(x))
        visual = tiny_clip.visual
        torch.testing.assert_close(tower.head(x), _ln(x, visual.ln_post) @ visual.proj)
        out = x @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        torch.testing.assert_close(tower.out_proj(3, x), out)
        torch.testing.assert_close(tower.attn_residual_branch(3, x), out)
    with pytest.raises(InvalidInputError, match=r"1\.\.4, got 0"):
        tower.qkv(0, x)
    with pytest.raises(InvalidInputError, match=r"1\.\.4, got 5"):
        tower.run_block(5, x)


def test_layerscale_tower_vanilla_is_faithful(rng):
    visual = _small_vit(ls_init_value=0.3)
    with torch.no_grad():
        for block in visual.transformer.resblocks:
            block.ls_1.gamma.uniform_(0.2, 2.0)
            block.ls_2.gamma.uniform_(0.2, 2.0)
    tower = tower_for(visual)
    px = torch.randn(2, 3, 32, 32, generator=rng)
    with torch.no_grad():
        x = tower.embed(px)
        for i in range(1, tower.num_layers + 1):
            x = tower.run_block(i, x)
        torch.testing.assert_close(tower.head(x[:, :1])[:, 0], visual(px), atol=1e-5, rtol=1e-5)
        block = visual.transformer.resblocks[0]
        y = torch.randn(1, 5, 32, generator=rng)
        ref = y + block.ls_2(block.mlp(block.ln_2(y)))
        assert not torch.allclose(ref, y + block.mlp(block.ln_2(y)))  # gamma matters
        torch.testing.assert_close(tower.ffn_residual(1, y), ref)


def test_refuses_modified_resnet():
    class Holder:
        visual = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64,
                                width=8)

    with pytest.raises(UnsupportedModelError, match="got ModifiedResNet"):
        tower_for(Holder())


def test_refuses_custom_blocks():
    with pytest.raises(UnsupportedModelError, match="CustomResidualAttentionBlock"):
        tower_for(_small_vit(qk_norm=True))


def test_refuses_attentional_pool():
    visual = _small_vit(attentional_pool=True, attn_pooler_queries=4, attn_pooler_heads=2)
    with pytest.raises(UnsupportedModelError, match="attentional pooling"):
        tower_for(visual)


def test_refuses_pruned_head():
    visual = _small_vit()
    visual.proj = None
    with pytest.raises(UnsupportedModelError, match="proj is None"):
        tower_for(visual)


def test_refuses_non_square_patches():
    with pytest.raises(UnsupportedModelError, match="square patches"):
        tower_for(_small_vit(patch_size=(8, 4)))


def test_refuses_patch_dropout_in_train_mode():
    visual = _small_vit(patch_dropout=0.5)
    tower = tower_for(visual)  # fine in eval mode
    assert tower.embed(torch.zeros(1, 3, 32, 32)).shape == (1, 17, 32)
    visual.train()
    with pytest.raises(UnsupportedModelError, match="patch dropout"):
        tower.embed(torch.zeros(1, 3, 32, 32))


def test_refuses_objects_without_visual():
    with pytest.raises(UnsupportedModelError, match="expected an open_clip VisionTransformer"):
        tower_for(object())


def test_refuses_attention_dropout_in_train_mode():
    visual = _small_vit()
    for block in visual.transformer.resblocks:
        block.attn.dropout = 0.1
    tower = tower_for(visual)
    assert tower.embed(torch.zeros(1, 3, 32, 32)).shape == (1, 17, 32)  # eval: fine
    visual.train()
    with pytest.raises(UnsupportedModelError, match="attention dropout"):
        tower.embed(torch.zeros(1, 3, 32, 32))


def test_pos_embed_modes_follow_their_formulas(rng):
    pos = torch.randn(1 + 16, 8, generator=rng)
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)

    def rows(g):
        return g.permute(0, 2, 3, 1).reshape(-1, 8)

    cubic = F.interpolate(grid, size=(6, 3), mode="bicubic", align_corners=False)
    dino = F.interpolate(grid, scale_factor=(6.1 / 4, 3.1 / 4), mode="bicubic")
    torch.testing.assert_close(interpolate_pos_embed(pos, (4, 4), (6, 3), mode="bicubic")[1:],
                               rows(cubic))
    ours = interpolate_pos_embed(pos, (4, 4), (6, 3), mode="bicubic_scale")
    torch.testing.assert_close(ours[1:], rows(dino))
    torch.testing.assert_close(ours[:1], pos[:1])
    assert not torch.allclose(ours[1:], rows(cubic), atol=1e-3)  # the factor moves samples
    assert interpolate_pos_embed(pos, (4, 4), (4, 4), mode="bicubic_scale") is pos
    with pytest.raises(InvalidInputError, match="bicubic_scale"):
        interpolate_pos_embed(pos, (4, 4), (6, 3), mode="nearest")
