"""Each evaluation preset against its peer's published procedure, on the tiny model.

The references below are written from the peers' code (read, not copied):

- SCLIP ``clip_segmentor.py`` / NACLIP ``naclip.py`` / ClearCLIP ``clearclip_segmentor.py``:
  mmseg ``Resize`` (plain bilinear), for every window the logits of every *query* (synonym) on
  the patch grid, bilinearly upsampled to the window, summed and divided by the window count,
  upsampled to the original size, PAMR guided by the resized input upsampled back, then
  ``softmax(logit_scale * logits)`` over all queries and the maximum per class, arg-max and
  ``prob_thd``; NACLIP with ``slide_crop=0`` feeds the whole resized image (its patch
  convolution drops the pixels past the last whole patch). Their towers'
  ``interpolate_pos_encoding`` resamples positions bicubically with ``scale_factor = (n + 0.1)
  / N0``. SCLIP's ``area_thd`` zeroes small non-background classes.
- TCL ``sclip/model.py::interpolate_pos_emb``: bicubic to the target size.

Features come from the engine's readout (itself tested against the peers' attention code) on a
copy of the model whose positional embedding has been resampled here, by the peer's formula,
to the window's grid, so the tower sees it as its native grid and adds it unchanged.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipseg.apps.datasets import class_names
from clipseg.apps.evaluate import PROTOCOLS, area_filtered_labels, resolve_settings
from clipseg.features import DenseEncoder
from clipseg.labels import class_threshold_vector
from clipseg.models import wrap_model
from clipseg.pipeline import Segmenter
from clipseg.refine import pamr
from clipseg.text import parse_classes

CLASSES = ["sky; wall; tree", "cat", "person; person in shirt; person in jeans", "car"]
SHORT = 40          # the tiny model's stand-in for 336 / 448 (8 px patches, native grid 4 x 4)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 60 x 90 smooth colour image: resizing to a 40 px short side shrinks it."""
    rng = np.random.default_rng(7)
    small = rng.uniform(0, 1, (6, 9, 3)).astype(np.float32)
    t = torch.from_numpy(small).permute(2, 0, 1)[None]
    big = F.interpolate(t, size=(60, 90), mode="bicubic", align_corners=False)[0]
    noise = torch.from_numpy(rng.normal(0, 0.05, (3, 60, 90)).astype(np.float32))
    return (big + noise).clamp(0, 1).permute(1, 2, 0).contiguous().numpy()


def _tiny(protocol: str, dataset: str, model_name: str) -> dict:
    """The preset's geometry scaled to the tiny model: whole image stays whole image."""
    spec = PROTOCOLS[protocol]
    crop = {**spec.options, **spec.per_dataset.get(dataset, {})}["crop"]
    stride = {**spec.options, **spec.per_dataset.get(dataset, {})}["stride"]
    out = {"model": model_name, "device": "cpu", "short_side": SHORT, "prompts": "imagenet7"}
    if crop != 0:
        out.update(crop=24, stride=24 if stride == crop else 16)
    return out


# -- references ---------------------------------------------------------------------------------
def _pos_dino(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """SCLIP / ClearCLIP / NACLIP ``interpolate_pos_encoding``."""
    n = pos.shape[0] - 1
    side = int(math.sqrt(n))
    if grid == (side, side):
        return pos
    h0, w0 = grid[0] + 0.1, grid[1] + 0.1
    patches = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=(h0 / side, w0 / side), mode="bicubic")
    assert tuple(patches.shape[-2:]) == grid
    return torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _pos_tcl(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """TCL ``interpolate_pos_emb``: bicubic to the size."""
    n = pos.shape[0] - 1
    side = int(math.sqrt(n))
    if grid == (side, side):
        return pos
    patches = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _pos_bilinear(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    n = pos.shape[0] - 1
    side = int(math.sqrt(n))
    if grid == (side, side):
        return pos
    patches = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _features(model, readout, pixels: torch.Tensor, pos_fn) -> torch.Tensor:
    """(1, h, w, D) readout of ``pixels`` with positions resampled by ``pos_fn``."""
    grid = (pixels.shape[-2] // 8, pixels.shape[-1] // 8)  # conv stem: whole patches only
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.visual.positional_embedding = torch.nn.Parameter(
            pos_fn(model.visual.positional_embedding.detach(), grid))
    m.visual.grid_size = grid
    with torch.no_grad():
        return DenseEncoder(m, readout)(pixels)


def _reference(model, loaded, image, config, *, pos_fn, per_query, crop, stride, scale,
               pamr_guide=None, thd=0.0):
    """Class probabilities and labels by the peers' slide/whole procedure."""
    specs = parse_classes(CLASSES)
    seg = Segmenter(config, model=loaded)
    text, owner = seg.text_encoder_for(config.labels.prompts).encode(specs)
    k = len(specs)
    # mmseg Resize: plain bilinear to the short side, keep ratio
    h, w = image.shape[:2]
    f = SHORT / min(h, w)
    rh, rw = int(h * f + 0.5), int(w * f + 0.5)
    img = torch.from_numpy(image).permute(2, 0, 1)[None]
    resized = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    x = (resized - mean) / std
    readout = seg.resolved_config.readout

    def logits_of(crop_img):
        emb = _features(model, readout, crop_img, pos_fn)[0]            # (gh, gw, D)
        cos = emb @ text.T                                             # (gh, gw, S)
        if not per_query:                                              # best synonym first
            cos = torch.stack([cos[..., owner == c].max(-1).values for c in range(k)], -1)
        return F.interpolate(cos.permute(2, 0, 1)[None], size=crop_img.shape[-2:],
                             mode="bilinear", align_corners=False)

    if crop == 0:
        logits = logits_of(x)
    else:  # forward_slide
        out = text.shape[0] if per_query else k
        preds = torch.zeros(1, out, rh, rw)
        count = torch.zeros(1, 1, rh, rw)
        for hi in range(max(rh - crop + stride - 1, 0) // stride + 1):
            for wi in range(max(rw - crop + stride - 1, 0) // stride + 1):
                y1, x1 = hi * stride, wi * stride
                y2, x2 = min(y1 + crop, rh), min(x1 + crop, rw)
                y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                preds += F.pad(logits_of(x[:, :, y1:y2, x1:x2]), (x1, rw - x2, y1, rh - y2))
                count[:, :, y1:y2, x1:x2] += 1
        logits = preds / count
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    if pamr_guide is not None:
        guide = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False) \
            if pamr_guide == "resized" else img
        refine = config.refine
        logits = pamr(guide[0], logits[0], refine.pamr_dilations, refine.pamr_iterations)[None]
    probs = (logits[0] * scale).softmax(0)
    if per_query:  # postprocess_result: one-hot over queries, max per class
        one_hot = F.one_hot(owner, k).T.view(k, -1, 1, 1).to(probs.dtype)
        probs = (probs[None] * one_hot).max(1)[0]
    pred = probs.argmax(0) + 1
    pred[probs.max(0)[0] < thd] = 0
    return probs.numpy(), pred.numpy()


#: protocol, dataset, reference settings as each peer's code and configs give them
CASES = [
    ("sclip", "voc21", dict(pos_fn=_pos_dino, per_query=True, scale=65.0, thd=0.1)),
    ("sclip", "coco_stuff", dict(pos_fn=_pos_dino, per_query=True, scale=40.0)),
    ("clearclip", "voc20", dict(pos_fn=_pos_dino, per_query=True, scale=50.0)),
    ("clearclip", "cityscapes", dict(pos_fn=_pos_dino, per_query=True, scale=50.0)),
    ("naclip", "voc20", dict(pos_fn=_pos_dino, per_query=True, scale=40.0,
                             pamr_guide="resized")),
    ("naclip", "context60", dict(pos_fn=_pos_dino, per_query=True, scale=40.0, thd=0.1,
                                 pamr_guide="resized")),
    ("tcl", "ade150", dict(pos_fn=_pos_tcl, per_query=False, scale=40.0,
                           pamr_guide="original")),
    ("paper", "voc20", dict(pos_fn=_pos_bilinear, per_query=False, scale=40.0,
                            pamr_guide="resized")),
    ("paper", "voc21", dict(pos_fn=_pos_bilinear, per_query=True, scale=40.0, thd=0.1,
                            pamr_guide="resized")),
]


@pytest.mark.parametrize("protocol,dataset,ref", CASES, ids=[f"{p}-{d}" for p, d, _ in CASES])
def test_preset_reproduces_the_peer_procedure(protocol, dataset, ref, tiny_clip,
                                              tiny_model_name, image):
    settings = resolve_settings(protocol, dataset, _tiny(protocol, dataset, tiny_model_name))
    config = settings.config
    if config.refine.pamr:  # keep PAMR cheap on 2 CPU cores; its geometry is what is tested
        config = config.replace(pamr_iterations=3, pamr_dilations=(1, 2))
    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    result = Segmenter(config, model=loaded).segment(image, CLASSES)
    window = config.window
    probs, labels = _reference(tiny_clip, loaded, image, config, crop=window.crop,
                               stride=window.stride, **ref)
    np.testing.assert_allclose(result.probs, probs, atol=2e-5)
    top2 = np.sort(probs, axis=0)[-2:]
    clear = (top2[1] - top2[0] > 1e-4) & (np.abs(top2[1] - ref.get("thd", 0.0)) > 1e-4)
    np.testing.assert_array_equal(result.labels[clear], labels[clear])
    assert clear.mean() > 0.95


def test_sclip_area_threshold_matches_its_postprocess(tiny_clip, tiny_model_name, image):
    """clip_segmentor.py's area_thd: a non-background class predicted on at most 10 % of the
    non-background pixels loses its probabilities before arg-max and prob_thd."""
    settings = resolve_settings("sclip", "voc21", _tiny("sclip", "voc21", tiny_model_name))
    assert settings.area_threshold == 0.1
    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    result = Segmenter(settings.config, model=loaded).segment(image, CLASSES)
    thresholds = class_threshold_vector(result.class_names, result.config.labels)
    ours = area_filtered_labels(result.probs, thresholds, 0.1)

    seg = torch.from_numpy(result.probs.copy())                 # SCLIP's seg_logits (K, H, W)
    k = seg.shape[0]
    predictions = F.one_hot(seg.argmax(0), k).to(seg.dtype)
    area = predictions[:, :, 1:].sum((0, 1), keepdim=True)
    area = (area > 0.1 * area.sum()).to(seg.dtype)
    seg[1:] *= area.transpose(0, -1)
    pred = seg.argmax(0) + 1
    pred[seg.max(0)[0] < 0.1] = 0
    np.testing.assert_array_equal(ours, pred.numpy())
    # a probability map built so that class 2 holds 5 % of the non-background pixels
    probs = np.zeros((3, 10, 10), np.float32)
    probs[0, :5] = 0.9
    probs[1, 5:] = 0.9
    probs[2, 9, :1] = 1.0
    probs[1, 9, :1] = 0.5
    out = area_filtered_labels(probs, np.zeros(3, np.float32), 0.1)
    assert out[9, 0] == 2 and (out[:5] == 1).all()             # class 2 gave way to class 1


#: The peers' per-dataset values, from their configs/cfg_*.py (VOC21, C60, COCO-Object with
#: background; the scale, threshold, resize and window of each).
PEER_CONFIGS = {
    "sclip": {"voc20": (336, 224, 112, 40, 0.0), "voc21": (336, 224, 112, 65, 0.1),
              "context59": (336, 224, 112, 40, 0.0), "context60": (336, 224, 112, 50, 0.1),
              "coco_object": (336, 224, 112, 50, 0.1), "coco_stuff": (448, 224, 112, 40, 0.0),
              "ade150": (336, 224, 112, 40, 0.0), "cityscapes": (560, 224, 112, 40, 0.0)},
    "clearclip": {"voc20": (448, 448, 224, 50, 0.0), "voc21": (448, 448, 224, 50, 0.5),
                  "context59": (448, 448, 224, 50, 0.0), "context60": (448, 448, 224, 50, 0.15),
                  "coco_object": (448, 448, 224, 50, 0.4),
                  "coco_stuff": (448, 448, 224, 50, 0.0), "ade150": (448, 448, 224, 50, 0.0),
                  "cityscapes": (448, 224, 224, 50, 0.0)},
    "naclip": {"voc20": (336, 0, None, 40, 0.0), "voc21": (336, 0, None, 40, 0.1),
               "context59": (336, 224, 112, 40, 0.0), "context60": (336, 224, 112, 40, 0.1),
               "coco_object": (336, 224, 112, 40, 0.1), "coco_stuff": (336, 224, 112, 40, 0.0),
               "ade150": (336, 224, 112, 40, 0.0), "cityscapes": (560, 224, 112, 40, 0.0)},
}


@pytest.mark.parametrize("protocol", sorted(PEER_CONFIGS))
def test_preset_values_are_the_peer_configs(protocol):
    for dataset, (short, crop, stride, scale, thd) in PEER_CONFIGS[protocol].items():
        s = resolve_settings(protocol, dataset)
        w, lab = s.config.window, s.config.labels
        assert (w.short_side, w.crop, lab.logit_scale, lab.threshold) == \
            (short, crop, scale, thd), dataset
        if crop:
            assert w.stride == stride, dataset
        assert (s.config.readout.pos_interp, w.antialias, lab.synonym_reduce) == \
            ("bicubic_scale", False, "softmax_then_max")
        assert lab.prompts == "imagenet80" and s.background_prompt
    naclip = resolve_settings("naclip", "ade150").config.refine
    assert naclip.pamr and naclip.pamr_guide == "resized" and naclip.pamr_iterations == 10
    assert not resolve_settings("sclip", "ade150").config.refine.pamr
    assert resolve_settings("sclip", "voc21").area_threshold == 0.1
    assert resolve_settings("sclip", "context60").area_threshold is None


def test_clearclip_names_are_its_own():
    """ClearCLIP's cls_voc20.txt: SCLIP's words (ship, table, pottedplant) without the person
    and monitor synonyms; cls_voc21.txt a plain background; COCO-Object the plain list."""
    voc20 = class_names("voc20", "clearclip")
    assert voc20[3] == "ship" and voc20[14] == "person" and voc20[19] == "tvmonitor"
    assert not any(";" in n for n in voc20)
    assert class_names("voc21", "clearclip") == ["background"] + voc20
    assert class_names("coco_object", "clearclip") == class_names("coco_object", "plain")
    assert class_names("ade150", "clearclip") == class_names("ade150", "sclip")
    assert resolve_settings("clearclip", "voc20").names == "clearclip"
