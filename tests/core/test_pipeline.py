"""The Segmenter facade on a tiny random open_clip model."""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from clipseg.config import LabelConfig, RefineConfig, SegmentConfig
from clipseg.errors import ClipSegError, InvalidConfigError, InvalidInputError
from clipseg.features import dense_embeddings
from clipseg.image import to_pixels
from clipseg.models import wrap_model
from clipseg.pipeline import Progress, Segmenter, segment
from clipseg.text import TextEncoder, class_logits, parse_classes
from clipseg.tiling import Stitcher, upsample_logits, window_boxes

CLASSES = "cat, dog; puppy, sky"
TEMPLATES = ("a photo of a {}.", "{}")  # two prompts keep the tiny text tower cheap


@pytest.fixture(scope="module")
def loaded(tiny_clip, tiny_model_name):
    """The tiny model wrapped once (building open_clip's tokenizer is the slow part)."""
    return wrap_model(tiny_clip, name=tiny_model_name)


def make(config, loaded, **kwargs) -> Segmenter:
    return Segmenter(config, model=loaded, templates=TEMPLATES, **kwargs)


@pytest.fixture
def config(tiny_model_name) -> SegmentConfig:
    return SegmentConfig().replace(model=tiny_model_name, short_side=0, crop=32, stride=16,
                                   batch_size=3)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 58, 3), dtype=np.uint8)


@contextmanager
def count_vit_calls(model):
    """Count forward calls of the patch embedding (one per ViT pass); the hook is removed."""
    calls: list[tuple[int, ...]] = []
    handle = model.visual.conv1.register_forward_hook(
        lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    try:
        yield calls
    finally:
        handle.remove()


def drain(gen):
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def manual_probs(loaded, image, classes, crop, stride, scale):
    """Windows -> dense_embeddings -> cosine -> upsample -> average -> softmax, written out."""
    model = loaded.model
    specs = parse_classes(classes)
    text, owner = TextEncoder(loaded, templates=TEMPLATES).encode(specs)
    img01 = image.astype(np.float32) / 255
    h, w = image.shape[:2]
    st = Stitcher(len(specs), h, w)
    for y0, x0, y1, x1 in window_boxes(h, w, crop, stride):
        px = to_pixels(img01[y0:y1, x0:x1], loaded.mean, loaded.std, "cpu")
        emb = dense_embeddings(model, px, middle_layer=loaded.entry.middle_layer)[0]
        cos = class_logits(emb, text, owner, len(specs)).permute(2, 0, 1)
        st.add((y0, x0, y1, x1), upsample_logits(cos, (y1 - y0, x1 - x0)))
    return torch.softmax(scale * st.result(), dim=0).numpy()


def test_run_yields_progress_per_batch_and_matches_manual(tiny_clip, loaded, config, image,
                                                          tiny_model_name):
    seg = make(config, loaded)
    with count_vit_calls(tiny_clip) as calls:
        steps, result = drain(seg.run(image, CLASSES))
    windows = [s for s in steps if s.stage == "windows"]
    n = len(window_boxes(40, 58, 32, 16))                       # 2 x 3 = 6 windows
    assert n == 6 and len(windows) == math.ceil(n / 3) == len(calls)
    assert [s.done for s in windows] == [3, 6] and all(s.total == n for s in windows)
    # text: a start step, then one per synonym encoded (cat, dog, puppy, sky), each a point
    # where the caller can stop
    assert [(s.stage, s.done, s.total) for s in steps if s.stage == "text"] == [
        ("text", 0, 1), ("text", 1, 4), ("text", 2, 4), ("text", 3, 4), ("text", 4, 4)]
    assert [s.stage for s in steps] == ["text"] * 5 + ["windows"] * 2 + ["labels"] * 2
    assert all(isinstance(s, Progress) for s in steps)

    assert result.labels.shape == (40, 58) and result.labels.dtype == np.uint8
    assert result.probs.shape == (3, 40, 58) and result.probs.dtype == np.float32
    assert result.class_names == ["cat", "dog", "sky"]
    assert result.model_name == tiny_model_name
    cfg = result.config
    assert cfg.labels.logit_scale == 40.0 and cfg.readout.middle_layer == 2  # ceil(4 / 2)
    expected = manual_probs(loaded, image, CLASSES, 32, 16, 40.0)
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    np.testing.assert_array_equal(result.labels, expected.argmax(0) + 1)


def test_relabel_does_not_run_the_vit(tiny_clip, loaded, config, image):
    seg = make(config, loaded)
    seg.segment(image, CLASSES)
    with count_vit_calls(tiny_clip) as calls:
        again = seg.relabel("tree, road, water, grass", labels=LabelConfig(threshold=0.3))
        same_classes = seg.relabel()
    assert calls == []
    assert again.class_names == ["tree", "road", "water", "grass"]
    assert again.config.labels.threshold == 0.3
    assert same_classes.class_names == again.class_names  # None keeps the last list
    fresh = make(config.replace(threshold=0.3), loaded).segment(
        image, "tree, road, water, grass")
    np.testing.assert_allclose(again.probs, fresh.probs, atol=1e-6)
    np.testing.assert_array_equal(again.labels, fresh.labels)


def test_same_image_twice_reuses_the_cache(tiny_clip, loaded, config, image):
    seg = make(config, loaded)
    first = seg.segment(image, CLASSES)
    with count_vit_calls(tiny_clip) as calls:
        steps, second = drain(seg.run(image.copy(), "sky, cat"))
    assert calls == [] and Progress("windows", 6, 6) in steps
    np.testing.assert_allclose(second.probs[0], make(config, loaded).segment(
        image, "sky, cat").probs[0], atol=1e-6)
    assert first.class_names != second.class_names


def test_relabel_without_a_run_is_an_error(tiny_clip, loaded, config):
    with pytest.raises(ClipSegError, match="finished run"):
        make(config, loaded).relabel("a, b")


def test_cancel_leaves_no_half_filled_cache(tiny_clip, loaded, config, image):
    seg = make(config, loaded)
    seg.segment(image, CLASSES)
    other = np.ascontiguousarray(image[::-1])
    gen = seg.run(other, CLASSES)
    step = next(gen)
    while step.stage != "windows":
        step = next(gen)
    assert step.done < step.total
    gen.close()                                   # the caller stops iterating mid-run
    assert not seg.has_cache                      # neither the partial nor the old image
    with pytest.raises(ClipSegError):
        seg.relabel("a, b")
    with count_vit_calls(tiny_clip) as calls:
        result = seg.segment(other, CLASSES)
    assert len(calls) == 2                        # a full pass, nothing taken from a cache
    fresh = make(config, loaded).segment(other, CLASSES)
    np.testing.assert_allclose(result.probs, fresh.probs, atol=1e-6)


def test_image_smaller_than_crop(tiny_clip, loaded, config):
    img = np.random.default_rng(1).random((20, 27, 3)).astype(np.float32)
    seg = make(config, loaded)
    with count_vit_calls(tiny_clip) as calls:
        result = seg.segment(img, CLASSES)
    assert calls == [(1, 3, 24, 32)]              # one window, rounded up to whole patches
    assert result.labels.shape == (20, 27) and result.probs.shape == (3, 20, 27)


def test_resize_short_side_returns_original_size(tiny_clip, loaded, config):
    img = np.random.default_rng(2).random((30, 45, 3)).astype(np.float32)
    seg = make(config.replace(short_side=48), loaded)
    with count_vit_calls(tiny_clip) as calls:
        result = seg.segment(img, CLASSES)
    # Resized to 48 x 72: (48 - 32 + 15) // 16 + 1 = 2 rows, (72 - 32 + 15) // 16 + 1 = 4 cols.
    assert sum(c[0] for c in calls) == 8
    assert result.labels.shape == (30, 45)


def test_pamr_option_refines(tiny_clip, loaded, config, image):
    options = dict(pamr=True, pamr_dilations=(1, 2), pamr_iterations=3, pamr_tile=16)
    steps, via_run = drain(make(config.replace(**options), loaded).run(image, CLASSES))
    assert [s.stage for s in steps].count("refine") == 2
    assert via_run.config.refine.pamr
    seg = make(config, loaded)
    plain = seg.segment(image, CLASSES)
    with count_vit_calls(tiny_clip) as calls:
        refined = seg.relabel(refine=RefineConfig(**options))
    assert calls == [] and refined.probs.shape == plain.probs.shape
    assert not np.allclose(refined.probs, plain.probs)
    np.testing.assert_allclose(refined.probs, via_run.probs, atol=1e-6)


def test_out_of_memory_halves_the_batch(tiny_clip, loaded, config, image):
    seg = make(config, loaded)
    real = seg._encode
    sizes = []

    def fake_encode(resized, boxes):
        sizes.append(len(boxes))
        if len(boxes) > 1:
            raise torch.OutOfMemoryError("fake: too many windows")
        return real(resized, boxes)

    seg._encode = fake_encode
    with pytest.warns(RuntimeWarning, match="retrying with 1"):
        steps, result = drain(seg.run(image, CLASSES))
    assert sizes[:3] == [3, 1, 1] and sizes.count(1) == 6
    assert [s.done for s in steps if s.stage == "windows"] == [1, 2, 3, 4, 5, 6]
    expected = make(config, loaded).segment(image, CLASSES)
    np.testing.assert_allclose(result.probs, expected.probs, atol=1e-6)

    def always_oom(resized, boxes):
        raise torch.OutOfMemoryError("fake")

    seg = make(config.replace(batch_size=1), loaded)
    seg._encode = always_oom
    with pytest.raises(ClipSegError, match="device='cpu'"):
        seg.segment(image, CLASSES)
    assert not seg.has_cache


def test_module_level_segment(tiny_clip, tiny_model_name, image):
    result = segment(image, ["cat", "dog"], model=tiny_clip, short_side=0, crop=32,
                     stride=16, threshold=0.9)
    assert result.labels.shape == (40, 58) and result.config.labels.threshold == 0.9
    assert (result.labels == 0).any()             # a high threshold leaves pixels unlabeled
    # A model given by name is the flat option of the same name (loading needs weights, so an
    # unknown name is the quickest way to see that the name reached the loader).
    with pytest.raises(ClipSegError, match="no-such-model"):
        segment(image, "cat, dog", model="no-such-model")


def test_bad_inputs(tiny_clip, loaded, config):
    seg = make(config, loaded)
    with pytest.raises(InvalidInputError, match="as_rgb01"):
        seg.segment(np.zeros((10, 10), np.uint8), CLASSES)
    with pytest.raises(InvalidInputError):
        seg.segment(np.zeros((10, 10, 3), np.uint8), "")
    with pytest.raises(ClipSegError, match="SegmentConfig"):
        Segmenter({"crop": 32})
    with pytest.raises(InvalidInputError, match="LoadedModel"):
        Segmenter(config, model="ViT-B-16")
    # A threshold for a class that is not in the list fails before the ViT pass.
    img = np.zeros((16, 16, 3), np.uint8)
    with count_vit_calls(tiny_clip) as calls, pytest.raises(InvalidInputError, match="'bird'"):
        make(config.replace(class_thresholds={"bird": 0.5}), loaded).segment(img, CLASSES)
    assert calls == []


def test_prompt_sets_select_templates_and_switch_without_a_vit_pass(tiny_clip, loaded, config,
                                                                    image):
    bare = Segmenter(config.replace(prompts="name"), model=loaded).segment(image, CLASSES)
    custom = Segmenter(config, model=loaded, templates=("{}",)).segment(image, CLASSES)
    np.testing.assert_allclose(bare.probs, custom.probs, atol=1e-6)
    assert bare.config.labels.prompts == "name"

    seg = Segmenter(config.replace(prompts="imagenet7"), model=loaded)
    seven = seg.segment(image, CLASSES)
    assert len(seg.text_encoder.templates) == 7
    assert not np.allclose(seven.probs, bare.probs, atol=1e-4)  # the prompts matter
    with count_vit_calls(tiny_clip) as calls:
        steps, again = drain(seg.run_relabel(labels=LabelConfig(prompts="name")))
    assert calls == []
    assert [s.stage for s in steps if s.stage == "text"] == ["text"] * 5  # 4 new synonyms
    np.testing.assert_allclose(again.probs, bare.probs, atol=1e-6)
    assert again.config.labels.prompts == "name"


def test_run_relabel_reports_text_progress_and_relabel_drains_it(loaded, config, image):
    seg = make(config, loaded)
    seg.segment(image, CLASSES)
    steps, result = drain(seg.run_relabel("tree, road"))
    assert [(s.stage, s.done, s.total) for s in steps if s.stage == "text"] == [
        ("text", 0, 1), ("text", 1, 2), ("text", 2, 2)]
    np.testing.assert_array_equal(result.labels, seg.relabel("tree, road").labels)


def test_run_on_the_same_pixels_with_new_label_options_reuses_the_cache(tiny_clip, loaded,
                                                                        config, image):
    seg = make(config, loaded)
    assert not seg.is_cached(image)
    first = seg.segment(image, CLASSES)
    assert not first.reused_embeddings and seg.is_cached(image.copy())
    with count_vit_calls(tiny_clip) as calls:
        again = seg.segment(image, "tree, road", labels=LabelConfig(threshold=0.4),
                            refine=dataclasses.replace(config.refine, pamr=True))
    assert calls == [] and again.reused_embeddings
    assert again.config.labels.threshold == 0.4 and again.config.refine.pamr
    fresh = make(config.replace(threshold=0.4, pamr=True), loaded).segment(image, "tree, road")
    np.testing.assert_allclose(again.probs, fresh.probs, atol=1e-6)
    edited = image.copy()
    edited[0, 0] ^= 1
    assert not seg.is_cached(edited)
    with pytest.raises(InvalidConfigError, match="labels as a LabelConfig"):
        seg.segment(image, CLASSES, labels={"threshold": 0.4})
