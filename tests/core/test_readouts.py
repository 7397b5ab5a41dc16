"""Each readout against a written-out computation of its formula from the raw weights.

The block inputs ``x_i`` come from open_clip's own ``forward_intermediates``; everything after
that (q/k/v slices of ``in_proj_weight``, attention, DSI, head) is spelled out here with plain
torch ops, independently of ``clipseg.readouts``. The relation term uses sklearn's DBSCAN.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN

from clipseg.features import dense_embeddings
from clipseg.readouts import attend, cra_attention, gaussian_window_bias, self_self_attention

ATOL = 2e-5


def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _qkv(block, x):
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    c = x.shape[-1]
    y = _ln(x, block.ln_1)
    return tuple(y @ w[i * c:(i + 1) * c].T + b[i * c:(i + 1) * c] for i in range(3))


def _ffn_res(block, x):
    h = F.gelu(_ln(x, block.ln_2) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias)
    return x + h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias


def _out(block, z):
    return z @ block.attn.out_proj.weight.T + block.attn.out_proj.bias


def _embed(visual, z):
    return F.normalize(_ln(z, visual.ln_post) @ visual.proj, dim=-1)


def _split(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def _merge(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


def _states(model, px):
    """[x_0, x_1, ..., x_L], each (B, 1 + P, width), x_i from open_clip's own blocks."""
    visual = model.visual
    w = visual.conv1.weight
    x = F.conv2d(px, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], 1)
    x0 = _ln(x + visual.positional_embedding, visual.ln_pre)
    out = visual.forward_intermediates(px, output_fmt="NLC", output_extra_tokens=True,
                                       intermediates_only=True)
    rest = [torch.cat([c, p], 1) for c, p in zip(out["image_intermediates_prefix"],
                                                 out["image_intermediates"])]
    return [x0] + rest


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def setup(tiny_clip):
    torch.manual_seed(11)
    px = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        xs = _states(tiny_clip, px)
    return tiny_clip, px, xs


def _ours(model, px, **kw):
    return dense_embeddings(model, px, **kw).reshape(px.shape[0], -1, 32)


def _dsi_values(model, xs, layers):
    blocks = model.visual.transformer.resblocks
    last = blocks[-1]
    big_l = len(blocks)
    values = [_qkv(last, xs[big_l - 1])[2]]
    for j in range(1, layers):
        i = big_l - j  # block i (1-based) has input x_{i-1}
        values.append(_qkv(last, _ffn_res(blocks[i - 1], xs[i - 1]))[2])
    return values


def _sklearn_relation(k_unit, eps, min_samples):
    out = []
    for kb in k_unit:
        d = (1.0 - kb @ kb.T).double().numpy()
        d = np.clip((d + d.T) / 2, 0, None)
        np.fill_diagonal(d, 0)
        lab = DBSCAN(eps=np.nextafter(eps, 0), min_samples=min_samples,
                     metric="precomputed").fit(d).labels_
        lab = torch.as_tensor(lab)
        out.append(((lab[:, None] == lab[None, :]) & (lab[:, None] >= 0)).float() * eps)
    return torch.stack(out)


def _paper_ref(model, xs, keys, *, tau=6.0, relation=None, dsi_layers=3, mode="value_mean",
               cls=False, qk=False):
    """Eq. 2 with Attn from ``keys`` (or the block's q-k), DSI values, written out."""
    visual = model.visual
    last = visual.transformer.resblocks[-1]
    start = 0 if cls else 1
    if qk:
        q, k, _ = _qkv(last, xs[-2])
        s = (64 // 4) ** -0.5
        attn = (_split(q[:, start:], 4) @ _split(k[:, start:], 4).transpose(-1, -2) * s)
        attn = attn.softmax(-1)
    else:
        k = F.normalize(keys[:, start:], dim=-1)
        logits = k @ k.transpose(1, 2)
        if relation is not None:
            logits = logits + _sklearn_relation(k, *relation)
        attn = (logits * tau).softmax(-1)
    values = [v[:, start:] for v in _dsi_values(model, xs, dsi_layers)]
    if mode == "value_mean":
        values = [sum(values) / len(values)]

    def apply(v):
        if attn.ndim == 4:
            return _merge(attn @ _split(v, 4))
        return attn @ v

    embs = [_embed(visual, _out(last, apply(v)))[:, 1 - start:] for v in values]
    return F.normalize(sum(embs) / len(embs), dim=-1)


def _key_eps(keys, quantile):
    k = F.normalize(keys[:, 1:], dim=-1)
    d = 1 - k @ k.transpose(1, 2)
    return float(torch.quantile(d.flatten(), quantile))


@pytest.mark.parametrize("min_samples,quantile", [(1, 0.15), (3, 0.2)])
def test_clipseg_cra_dsi(setup, min_samples, quantile):
    model, px, xs = setup
    blocks = model.visual.transformer.resblocks
    k_mid = _qkv(blocks[1], xs[1])[1]  # block M = 2, input x_1
    eps = _key_eps(k_mid, quantile)
    g = _sklearn_relation(F.normalize(k_mid[:, 1:], dim=-1), eps, min_samples)
    off = g * (1 - torch.eye(16))
    assert off.sum() > 0 and (g == 0).any()  # the relation term is not trivial here
    ref = _paper_ref(model, xs, k_mid, relation=(eps, min_samples))
    ours = _ours(model, px, method="clipseg", middle_layer=2, eps=eps, min_samples=min_samples)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    without = _paper_ref(model, xs, k_mid)
    assert not torch.allclose(ours, without, atol=1e-4)  # G changed the result


def test_kk_middle_and_clipseg_without_relation(setup):
    model, px, xs = setup
    k_mid = _qkv(model.visual.transformer.resblocks[2], xs[2])[1]  # block M = 3
    ref = _paper_ref(model, xs, k_mid, tau=4.0)
    ours = _ours(model, px, method="kk_middle", middle_layer=3, tau=4.0)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    off = _ours(model, px, method="clipseg", middle_layer=3, tau=4.0, relation=False)
    torch.testing.assert_close(off, ref, atol=ATOL, rtol=0)


def test_kk_last(setup):
    model, px, xs = setup
    k_last = _qkv(model.visual.transformer.resblocks[-1], xs[-2])[1]
    ref = _paper_ref(model, xs, k_last)
    torch.testing.assert_close(_ours(model, px, method="kk_last"), ref, atol=ATOL, rtol=0)


def test_middle_layer_equal_to_depth_uses_last_keys(setup):
    model, px, _ = setup
    torch.testing.assert_close(_ours(model, px, method="kk_middle", middle_layer=4),
                               _ours(model, px, method="kk_last"), atol=ATOL, rtol=0)


def test_qk(setup):
    model, px, xs = setup
    ref = _paper_ref(model, xs, None, qk=True)
    torch.testing.assert_close(_ours(model, px, method="qk"), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dsi_layers,mode", [(1, "value_mean"), (2, "value_mean"),
                                             (3, "embedding_mean"), (4, "value_mean")])
def test_dsi_variants(setup, dsi_layers, mode):
    model, px, xs = setup
    k_mid = _qkv(model.visual.transformer.resblocks[1], xs[1])[1]
    ref = _paper_ref(model, xs, k_mid, dsi_layers=dsi_layers, mode=mode)
    ours = _ours(model, px, method="kk_middle", middle_layer=2, dsi_layers=dsi_layers,
                 dsi_mode=mode)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_cls_in_attention(setup):
    model, px, xs = setup
    k_mid = _qkv(model.visual.transformer.resblocks[1], xs[1])[1]
    ref = _paper_ref(model, xs, k_mid, cls=True, relation=(0.5, 2))
    ours = _ours(model, px, method="clipseg", middle_layer=2, cls_in_attention=True, eps=0.5,
                 min_samples=2)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert not torch.allclose(ours, _ours(model, px, method="clipseg", middle_layer=2, eps=0.5,
                                          min_samples=2), atol=1e-4)


def test_maskclip(setup):
    model, px, xs = setup
    last = model.visual.transformer.resblocks[-1]
    ref = _embed(model.visual, _out(last, _qkv(last, xs[-2])[2]))[:, 1:]
    torch.testing.assert_close(_ours(model, px, method="maskclip"), ref, atol=ATOL, rtol=0)


def _self_self(x, s, bias=None):
    logits = _split(x, 4) @ _split(x, 4).transpose(-1, -2) * s
    return (logits if bias is None else logits + bias).softmax(-1)


def test_clearclip(setup):
    model, px, xs = setup
    last = model.visual.transformer.resblocks[-1]
    q, _, v = _qkv(last, xs[-2])
    ref = _embed(model.visual, _out(last, _merge(_self_self(q, 0.25) @ _split(v, 4))))[:, 1:]
    torch.testing.assert_close(_ours(model, px, method="clearclip"), ref, atol=ATOL, rtol=0)
    ref2 = _embed(model.visual, _out(last, _merge(_self_self(q, 0.1) @ _split(v, 4))))[:, 1:]
    torch.testing.assert_close(_ours(model, px, method="clearclip", attn_scale=0.1), ref2,
                               atol=ATOL, rtol=0)


def test_sclip_keeps_residual_and_ffn(setup):
    model, px, xs = setup
    last = model.visual.transformer.resblocks[-1]
    q, k, v = _qkv(last, xs[-2])
    attn = _self_self(q, 0.25) + _self_self(k, 0.25)
    x = xs[-2] + _out(last, _merge(attn @ _split(v, 4)))
    ref = _embed(model.visual, _ffn_res(last, x))[:, 1:]
    torch.testing.assert_close(_ours(model, px, method="sclip"), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("std", [1.0, 5.0])
def test_naclip(setup, std):
    model, px, xs = setup
    last = model.visual.transformer.resblocks[-1]
    _, k, v = _qkv(last, xs[-2])
    bias = torch.zeros(17, 17)
    for i in range(16):
        for j in range(16):
            dr, dc = i // 4 - j // 4, i % 4 - j % 4
            bias[1 + i, 1 + j] = math.exp(-(dr * dr + dc * dc) / (2 * std * std))
    ref = _embed(model.visual, _out(last, _merge(_self_self(k, 0.25, bias) @ _split(v, 4))))
    ours = _ours(model, px, method="naclip", naclip_std=std)
    torch.testing.assert_close(ours, ref[:, 1:], atol=ATOL, rtol=0)


def test_naclip_window_on_non_square_grid():
    bias = gaussian_window_bias((2, 3), 2.0, with_cls=False)
    assert bias.shape == (6, 6)
    # patch 0 = (0, 0), patch 5 = (1, 2): squared distance 1 + 4 = 5
    assert bias[0, 5].item() == pytest.approx(math.exp(-5 / 8))
    assert bias[1, 3].item() == pytest.approx(math.exp(-2 / 8))
    torch.testing.assert_close(torch.diagonal(bias), torch.ones(6))
    with_cls = gaussian_window_bias((2, 3), 2.0, with_cls=True)
    assert with_cls.shape == (7, 7) and with_cls[0].abs().sum() == 0
    assert with_cls[:, 0].abs().sum() == 0


def test_primitives(rng):
    k = torch.randn(2, 9, 8, generator=rng)
    kn = k / k.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(cra_attention(k, 3.0, 0.5, 1, relation=False),
                               3.0 * kn @ kn.transpose(1, 2))
    probs = self_self_attention(k, 2, 0.5)
    assert probs.shape == (2, 2, 9, 9)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 9))
    # a shared map applied to concatenated values = the same map applied to every head
    shared = torch.rand(2, 9, 9, generator=rng).softmax(-1)
    v = torch.randn(2, 9, 8, generator=rng)
    torch.testing.assert_close(attend(shared, v, 2),
                               attend(shared.unsqueeze(1).expand(2, 2, 9, 9), v, 2))
    per_head = attend(probs, v, 2)
    torch.testing.assert_close(per_head[..., :4], probs[:, 0] @ v[..., :4])
    torch.testing.assert_close(per_head[..., 4:], probs[:, 1] @ v[..., 4:])
