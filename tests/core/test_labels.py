"""Cosine logits -> labels + probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import clipseg.labels as labels_mod
from clipseg.config import LabelConfig
from clipseg.errors import InvalidInputError
from clipseg.labels import labels_from_logits


def _reference(cos: np.ndarray, scale: float, thresholds: np.ndarray):
    z = scale * cos.astype(np.float64)
    z = z - z.max(axis=0, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=0, keepdims=True)
    arg = p.argmax(axis=0)
    top = p.max(axis=0)
    lab = np.where(top >= thresholds[arg], arg + 1, 0)
    return lab, p


@pytest.fixture
def cos() -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.1, 0.4, (3, 17, 23)).astype(np.float32)


def test_matches_written_out_softmax_argmax(cos):
    names = ["a", "b", "c"]
    labels, probs = labels_from_logits(torch.from_numpy(cos), names, LabelConfig(), 40.0)
    ref_lab, ref_p = _reference(cos, 40.0, np.zeros(3))
    assert labels.dtype == np.uint8 and labels.shape == (17, 23)
    assert probs.dtype == np.float32 and probs.shape == (3, 17, 23)
    np.testing.assert_allclose(probs, ref_p, atol=1e-5)
    np.testing.assert_array_equal(labels, ref_lab)
    assert set(np.unique(labels)) <= {1, 2, 3}  # threshold 0 labels every pixel


def test_threshold_and_per_class_override(cos):
    names = ["a", "b", "c"]
    cfg = LabelConfig(threshold=0.6, class_thresholds={"b": 0.9})
    labels, _ = labels_from_logits(cos, names, cfg, 20.0)
    ref_lab, _ = _reference(cos, 20.0, np.array([0.6, 0.9, 0.6]))
    np.testing.assert_array_equal(labels, ref_lab)
    assert (labels == 0).any() and (labels != 0).any()   # the case actually exercises both
    # The override matters: with a global 0.6 only, some "b" pixels would be kept.
    plain, _ = labels_from_logits(cos, names, LabelConfig(threshold=0.6), 20.0)
    assert ((plain == 2) & (labels == 0)).any()


def test_unknown_class_threshold_name_is_reported(cos):
    cfg = LabelConfig(class_thresholds={"dog": 0.5, "a": 0.2})
    with pytest.raises(InvalidInputError) as info:
        labels_from_logits(cos, ["a", "b", "c"], cfg, 40.0)
    assert "'dog'" in str(info.value) and "'a', 'b', 'c'" in str(info.value)


def test_many_classes_use_uint16():
    cos = np.random.default_rng(1).normal(size=(300, 4, 5)).astype(np.float32)
    labels, probs = labels_from_logits(cos, [f"c{i}" for i in range(300)], LabelConfig(), 40.0)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, cos.argmax(0) + 1)


def test_chunked_rows_equal_single_chunk(cos, monkeypatch):
    names = ["a", "b", "c"]
    cfg = LabelConfig(threshold=0.5)
    whole = labels_from_logits(cos, names, cfg, 40.0)
    monkeypatch.setattr(labels_mod, "CHUNK_PIXELS", 23 * 2)  # two rows per chunk
    chunked = labels_from_logits(cos, names, cfg, 40.0)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1], rtol=1e-6, atol=1e-7)


def test_bad_input(cos):
    with pytest.raises(InvalidInputError, match="expected 3 class names"):
        labels_from_logits(cos, ["a", "b"], LabelConfig(), 40.0)
    with pytest.raises(InvalidInputError, match=r"\(K, H, W\)"):
        labels_from_logits(cos[0], ["a"], LabelConfig(), 40.0)
    with pytest.raises(InvalidInputError, match="logit_scale"):
        labels_from_logits(cos, ["a", "b", "c"], LabelConfig(), 0.0)


def test_per_synonym_maps_softmax_over_synonyms_then_max_per_class():
    """SCLIP's postprocess_result: softmax over all queries, then the best query per class."""
    gen = torch.Generator().manual_seed(3)
    cos = torch.rand(5, 4, 6, generator=gen) * 0.4
    owner = torch.tensor([0, 0, 1, 2, 2])
    labels, probs = labels_from_logits(cos, ["a", "b", "c"], LabelConfig(threshold=0.3), 40.0,
                                       owner=owner)
    p = torch.softmax(40.0 * cos, dim=0)
    expected = torch.stack([p[:2].max(0).values, p[2], p[3:].max(0).values])
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-6)
    top, arg = expected.max(0)
    np.testing.assert_array_equal(labels, torch.where(top >= 0.3, arg + 1, 0).numpy())
    assert not np.allclose(probs.sum(0), 1.0)  # class probabilities need not sum to 1
    with pytest.raises(InvalidInputError, match="at least one synonym map"):
        labels_from_logits(cos, ["a", "b", "c", "d"], LabelConfig(), 40.0, owner=owner)
