"""DenseEncoder / dense_embeddings: faithfulness to open_clip, shapes, norms, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clipseg
from clipseg.config import READOUTS, ReadoutConfig
from clipseg.errors import InvalidConfigError, InvalidInputError, UnsupportedModelError
from clipseg.features import DenseEncoder, default_middle_layer, dense_embeddings


@pytest.fixture
def pixels(rng):
    return torch.randn(2, 3, 32, 32, generator=rng)


def test_vanilla_class_token_reproduces_encode_image(tiny_clip, pixels):
    enc = DenseEncoder(tiny_clip, ReadoutConfig(method="vanilla"))
    tower = enc.tower
    with torch.no_grad():
        inputs = enc.collect(pixels)
        x_last = tower.run_block(tower.num_layers, inputs.last)
        ours = tower.head(x_last[:, :1])[:, 0]
        theirs = tiny_clip.encode_image(pixels)
    assert ours.shape == theirs.shape == (2, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_vanilla_patch_tokens_match_open_clip_intermediates(tiny_clip, pixels):
    visual = tiny_clip.visual
    depth = len(visual.transformer.resblocks)
    with torch.no_grad():
        out = visual.forward_intermediates(pixels, indices=[depth - 1], output_fmt="NLC",
                                           intermediates_only=True)
        tokens = out["image_intermediates"][0]  # (B, P, width), last block output
        ref = F.normalize(visual.ln_post(tokens) @ visual.proj, dim=-1).reshape(2, 4, 4, -1)
    ours = dense_embeddings(tiny_clip, pixels, method="vanilla")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", READOUTS)
def test_every_readout_gives_unit_vectors_on_the_grid(tiny_clip, method, rng):
    px = torch.randn(3, 3, 40, 24, generator=rng)
    emb = dense_embeddings(tiny_clip, px, method=method)
    assert emb.shape == (3, 5, 3, 32)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3, 5, 3), atol=1e-5, rtol=0)


def test_readouts_differ_from_each_other(tiny_clip, pixels):
    embs = {m: dense_embeddings(tiny_clip, pixels, method=m) for m in READOUTS}
    names = list(embs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(embs[a], embs[b], atol=1e-4), (a, b)


def test_batch_elements_are_independent(tiny_clip, pixels):
    both = dense_embeddings(tiny_clip, pixels, method="clipseg")
    first = dense_embeddings(tiny_clip, pixels[:1], method="clipseg")
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)


def test_class_independent_and_deterministic(tiny_clip, pixels):
    # no text is involved: the same image gives the same embeddings whatever is asked later
    a = dense_embeddings(tiny_clip, pixels, method="clipseg", middle_layer=2)
    b = clipseg.dense_embeddings(tiny_clip, pixels, method="clipseg", middle_layer=2)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_middle_layer_changes_clipseg_but_not_maskclip(tiny_clip, pixels):
    a = dense_embeddings(tiny_clip, pixels, middle_layer=1)
    b = dense_embeddings(tiny_clip, pixels, middle_layer=3)
    assert not torch.allclose(a, b, atol=1e-4)
    m1 = dense_embeddings(tiny_clip, pixels, method="maskclip", middle_layer=1)
    m3 = dense_embeddings(tiny_clip, pixels, method="maskclip", middle_layer=3)
    torch.testing.assert_close(m1, m3, atol=0, rtol=0)


def test_default_middle_layer_is_ceil_half(tiny_clip, pixels):
    assert default_middle_layer(4) == 2 and default_middle_layer(12) == 6
    assert default_middle_layer(5) == 3 and default_middle_layer(1) == 1
    enc = DenseEncoder(tiny_clip, ReadoutConfig())
    assert enc.middle_layer == 2
    torch.testing.assert_close(dense_embeddings(tiny_clip, pixels),
                               dense_embeddings(tiny_clip, pixels, middle_layer=2))


def test_loaded_model_like_wrapper_and_visual_are_accepted(tiny_clip, pixels):
    class Wrapper:
        model = tiny_clip

    ref = dense_embeddings(tiny_clip, pixels, method="maskclip")
    torch.testing.assert_close(dense_embeddings(Wrapper(), pixels, method="maskclip"), ref)
    torch.testing.assert_close(dense_embeddings(tiny_clip.visual, pixels, method="maskclip"), ref)


def test_model_is_left_untouched(tiny_clip, pixels):
    before = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_clip.modules()]
    dense_embeddings(tiny_clip, pixels, method="clipseg")
    after = tiny_clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hooks == [len(m._forward_hooks) + len(m._forward_pre_hooks)
                     for m in tiny_clip.modules()]


def test_cpu_bf16_autocast_runs_and_stays_close(tiny_clip, pixels):
    ref = dense_embeddings(tiny_clip, pixels, method="clipseg")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = dense_embeddings(tiny_clip, pixels, method="clipseg")
    assert low.dtype == torch.float32
    cos = (low * ref).sum(-1)
    assert cos.min() > 0.99


@pytest.mark.parametrize("bad", [
    torch.zeros(3, 32, 32),                      # 3-D
    torch.zeros(1, 1, 32, 32),                   # one channel
    torch.zeros(1, 4, 32, 32),                   # RGBA
    torch.zeros(1, 3, 32, 32, dtype=torch.uint8),  # not float
    torch.zeros(1, 3, 7, 32),                    # less than one patch high
    torch.zeros(1, 3, 32, 4),                    # less than one patch wide
    torch.zeros(0, 3, 32, 32),                   # empty batch
    torch.full((1, 3, 32, 32), float("nan")),    # not finite
])
def test_bad_pixels_are_refused(tiny_clip, bad):
    with pytest.raises(InvalidInputError, match="expected"):
        dense_embeddings(tiny_clip, bad)


def test_numpy_pixels_are_refused(tiny_clip):
    import numpy as np
    with pytest.raises(InvalidInputError, match=r"\(B, 3, H, W\).*ndarray"):
        dense_embeddings(tiny_clip, np.zeros((1, 3, 32, 32), np.float32))


def test_unknown_method_and_option(tiny_clip, pixels):
    with pytest.raises(InvalidConfigError, match="method.*clipseg.*got 'nope'"):
        dense_embeddings(tiny_clip, pixels, method="nope")
    with pytest.raises(InvalidConfigError, match="unknown option.*taus.*tau"):
        dense_embeddings(tiny_clip, pixels, taus=3)


@pytest.mark.parametrize("layer", [0, 5, -1])
def test_middle_layer_out_of_range(tiny_clip, pixels, layer):
    with pytest.raises(InvalidConfigError, match="middle_layer"):
        dense_embeddings(tiny_clip, pixels, middle_layer=layer)


def test_middle_layer_argument_range_and_conflict(tiny_clip):
    with pytest.raises(InvalidConfigError, match=r"1\.\.4.*got 9"):
        DenseEncoder(tiny_clip, ReadoutConfig(), middle_layer=9)
    with pytest.raises(InvalidConfigError, match="one value"):
        DenseEncoder(tiny_clip, ReadoutConfig(middle_layer=2), middle_layer=3)
    assert DenseEncoder(tiny_clip, ReadoutConfig(middle_layer=3), middle_layer=3).middle_layer == 3
    assert DenseEncoder(tiny_clip, ReadoutConfig(), middle_layer=4).middle_layer == 4


def test_dsi_layers_beyond_depth(tiny_clip, pixels):
    with pytest.raises(InvalidConfigError, match="dsi_layers.*at most 4"):
        dense_embeddings(tiny_clip, pixels, dsi_layers=5)
    assert dense_embeddings(tiny_clip, pixels, dsi_layers=4).shape == (2, 4, 4, 32)


def test_non_vit_model_is_refused(pixels):
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        dense_embeddings(torch.nn.Linear(3, 3), pixels)


def test_pixels_on_another_device_are_refused(tiny_clip):
    px = torch.zeros(1, 3, 32, 32, device="meta")
    with pytest.raises(InvalidInputError, match="device"):
        dense_embeddings(tiny_clip, px)


def test_low_precision_weights_run_and_stay_close(tiny_clip, pixels):
    import copy
    low_model = copy.deepcopy(tiny_clip).to(torch.bfloat16)
    ref = dense_embeddings(tiny_clip, pixels, method="clipseg", middle_layer=2)
    low = dense_embeddings(low_model, pixels, method="clipseg", middle_layer=2)
    assert low.dtype == torch.float32
    assert (low * ref).sum(-1).min() > 0.99
