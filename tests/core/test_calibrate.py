"""Coherence metric, per-layer calibration on the tiny model, and model profiles."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from clipseg.apps.calibrate import calibrate, coherence_auroc, patch_labels, sample_pairs
from clipseg.apps.cli import main
from clipseg.config import ModelConfig
from clipseg.errors import InvalidConfigError, InvalidInputError
from clipseg.image import to_pixels
from clipseg.models import get_entry, list_models, load_model, wrap_model
from clipseg.models.profiles import delete_profile, get_profile, list_profiles, save_profile


@pytest.fixture(autouse=True)
def _profile_home(tmp_path, monkeypatch):
    """Profiles go to a temporary folder, never to the user's config."""
    monkeypatch.setenv("CLIPSEG_HOME", str(tmp_path / "home"))


# -- the metric ---------------------------------------------------------------------------------
def test_one_hot_features_are_perfectly_coherent_and_random_ones_are_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=300)
    i, j = sample_pairs(len(labels), 20000, rng)
    one_hot = np.eye(4)[labels] + 0.01 * rng.normal(size=(300, 4))
    assert coherence_auroc(one_hot, labels, i, j) == pytest.approx(1.0)
    noise = rng.normal(size=(300, 64))
    assert coherence_auroc(noise, labels, i, j) == pytest.approx(0.5, abs=0.03)
    # and it is the AUROC of the pairwise cosine, as sklearn computes it
    f = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    expected = roc_auc_score(labels[i] == labels[j], np.sum(f[i] * f[j], axis=1))
    assert coherence_auroc(torch.from_numpy(noise), labels, i, j) == pytest.approx(expected,
                                                                                   abs=1e-6)


def test_sample_pairs():
    rng = np.random.default_rng(1)
    i, j = sample_pairs(5, 100, rng)  # 10 pairs exist: all of them, each once
    assert sorted(zip(i.tolist(), j.tolist())) == [(a, b) for a in range(5)
                                                   for b in range(a + 1, 5)]
    i, j = sample_pairs(200, 3000, rng)  # 19900 pairs exist: 3000 are drawn
    assert len(i) == 3000 and np.all(i != j) and i.max() < 200 and j.max() < 200
    assert abs(np.mean(j > i) - 0.5) < 0.05  # no bias towards one side
    assert len(sample_pairs(1, 10, rng)[0]) == 0


def test_patch_labels_majority_and_ignore():
    mask = np.zeros((4, 6), int)
    mask[:2, :2] = 3           # patch (0, 0): all 3
    mask[:2, 2:4] = [[5, 5], [5, 0]]   # patch (0, 1): 5 wins 3 to 1
    mask[2:, :2] = 0           # patch (1, 0): unlabeled -> ignored
    mask[2:, 4:] = [[7, 7], [0, 0]]    # tie 7/0 -> smaller value 0 -> ignored
    out = patch_labels(mask, (2, 3), 2, ignore=(0,))
    np.testing.assert_array_equal(out, [3, 5, -1, -1, -1, -1])


# -- calibrate() on the tiny model, checked against open_clip's own forward pass ----------------
def _scene(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((size, size), np.int64)
    mask[:, size * 5 // 8:] = 2                       # not on a window border
    mask[: size // 4, : size // 4] = 0                 # an unlabeled corner
    image = np.where(mask[..., None] == 2, [0.9, 0.2, 0.1], [0.1, 0.3, 0.8])
    image = np.clip(image + 0.05 * rng.normal(size=image.shape), 0, 1).astype(np.float32)
    return image, mask


def _reference_key_auroc(model, loaded, image, mask):
    """Keys of every block from open_clip's own forward (pre-hooks on attn), then sklearn."""
    captured = []
    handles = [b.attn.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
               for b in model.visual.transformer.resblocks]
    try:
        with torch.no_grad():
            model.encode_image(to_pixels(image, loaded.mean, loaded.std, "cpu"))
    finally:
        for h in handles:
            h.remove()
    labels = patch_labels(mask, (4, 4), 8, ignore=(0,))
    valid = np.flatnonzero(labels >= 0)
    a, b = np.triu_indices(len(valid), k=1)
    same = labels[valid][a] == labels[valid][b]
    out = []
    for block, ln1 in zip(model.visual.transformer.resblocks, captured):
        w, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
        width = w.shape[1]
        k = (ln1[0, 1:] @ w[width:2 * width].T + bias[width:2 * width]).numpy()[valid]
        k = k / np.linalg.norm(k, axis=1, keepdims=True)
        out.append(roc_auc_score(same, np.sum(k[a] * k[b], axis=1)))
    return out


def test_calibrate_matches_keys_from_open_clips_forward(tiny_clip, tiny_model_name):
    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    image, mask = _scene(0)
    report = calibrate(loaded, [image], [mask], short_side=32, crop=32, pairs=10000)
    expected = _reference_key_auroc(tiny_clip, loaded, image, mask)
    np.testing.assert_allclose(report.scores["key"], expected, atol=1e-5)
    assert report.windows == 1 and report.images == 1
    assert set(report.scores) == {"key", "query", "value", "output"}
    assert all(len(v) == 4 for v in report.scores.values())
    assert report.best_layer == int(np.argmax(expected)) + 1
    assert all(0.0 <= v <= 1.0 for v in report.scores["output"])


def test_calibrate_measures_the_windows_inference_feeds(tiny_clip, tiny_model_name):
    """An image shorter than the window: inference resizes the 20-row windows to 24 rows (the
    next multiple of the 8 px patch). Calibration must measure those same inputs, so its key
    AUROC equals one computed from the keys of the Segmenter's own pass (captured with
    read-only pre-hooks on the attention modules)."""
    from clipseg.apps.calibrate import nearest
    from clipseg.config import SegmentConfig
    from clipseg.pipeline import Segmenter
    from clipseg.windows import plan_windows

    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    rng = np.random.default_rng(4)
    mask = np.ones((20, 44), np.int64)
    mask[:, 22:] = 2
    image = np.where(mask[..., None] == 2, [0.8, 0.3, 0.2], [0.2, 0.4, 0.7])
    image = np.clip(image + 0.1 * rng.normal(size=image.shape), 0, 1).astype(np.float32)
    config = SegmentConfig.from_flat(model=tiny_model_name, short_side=20, crop=32, stride=32,
                                     device="cpu", method="vanilla")
    report = calibrate(loaded, [image], [mask], kinds=("key",), short_side=20, crop=32,
                       config=config, pairs=10**6, ignore=())

    captured = []
    blocks = tiny_clip.visual.transformer.resblocks
    handles = [b.attn.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
               for b in blocks]
    try:
        segmenter = Segmenter(config, model=loaded)
        emb = segmenter.window_embeddings(image)
        while True:
            try:
                next(emb)
            except StopIteration:
                break
    finally:
        for h in handles:
            h.remove()
    boxes = plan_windows(image, segmenter.resolved_config.window).boxes
    assert [b[2] - b[0] for b in boxes] == [20, 20]        # cut short by the image
    assert captured[0].shape[1] == 1 + 3 * 4               # ...and fed as 24 x 32 pixels
    scores = []
    for layer, ln1 in enumerate(captured[:len(blocks) - 1], start=1):  # block L: the readout
        w, bias = blocks[layer - 1].attn.in_proj_weight, blocks[layer - 1].attn.in_proj_bias
        width = w.shape[1]
        per_window = []
        for n, (y0, x0, y1, x1) in enumerate(boxes):
            labels = patch_labels(nearest(mask[y0:y1, x0:x1], (24, 32)), (3, 4), 8, ignore=())
            a, b = np.triu_indices(len(labels), k=1)
            k = (ln1[n, 1:] @ w[width:2 * width].T + bias[width:2 * width]).numpy()
            k = k / np.linalg.norm(k, axis=1, keepdims=True)
            per_window.append(roc_auc_score(labels[a] == labels[b], np.sum(k[a] * k[b], 1)))
        scores.append(np.mean(per_window))
    np.testing.assert_allclose(report.scores["key"][:len(scores)], scores, atol=1e-5)
    assert report.windows == 2 and (report.short_side, report.crop) == (20, 32)


def test_a_layer_made_perfectly_coherent_is_chosen(tiny_clip, tiny_model_name):
    """Weight surgery: without positional embeddings, patches of one flat colour stay identical
    tokens through every block. Blocks other than 3 get constant keys (AUROC 0.5: all pairs
    tie); block 3 keeps its key projection, so its keys separate the colours (AUROC 1)."""
    model = copy.deepcopy(tiny_clip)
    width = model.visual.conv1.out_channels
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.visual.positional_embedding.zero_()
        for number, block in enumerate(model.visual.transformer.resblocks, start=1):
            if number != 3:
                block.attn.in_proj_weight[width:2 * width] = 0.0
                block.attn.in_proj_bias[width:2 * width] = torch.randn(width, generator=gen)
    loaded = wrap_model(model, name=tiny_model_name, device="cpu")
    mask = np.ones((32, 32), np.int64)
    mask[:, 8:24] = 2
    mask[16:, 24:] = 3                                   # patch-aligned regions
    colours = np.array([[0, 0, 0], [0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]])
    image = colours[mask].astype(np.float32)
    report = calibrate(loaded, [image], [mask], kinds=("key",), short_side=32, crop=32)
    np.testing.assert_allclose(report.scores["key"], [0.5, 0.5, 1.0, 0.5], atol=1e-6)
    assert report.best_layer == 3


def test_calibrate_averages_windows_and_rejects_bad_input(tiny_clip, tiny_model_name, tmp_path):
    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    images, masks = zip(*(_scene(s, 64) for s in range(2)))
    report = calibrate(loaded, list(images), list(masks), kinds=("key", "value"),
                       short_side=64, crop=32, pairs=500, seed=3)
    # 4 windows per image; the two on the left hold one class only (+ unlabeled) and are
    # skipped, so 2 images x 2 windows count
    assert report.windows == 4 and report.images == 2
    assert tuple(report.scores) == ("key", "value")
    again = calibrate(loaded, list(images), list(masks), kinds=("key", "value"),
                      short_side=64, crop=32, pairs=500, seed=3)
    assert again.scores == report.scores  # seeded
    md = report.to_markdown()
    assert md.splitlines()[0] == "| layer | key | value |"
    assert f"Best key layer: {report.best_layer}" in md
    png = report.plot(tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(report.to_dict()))["best_layer"] == report.best_layer

    with pytest.raises(InvalidConfigError, match="including 'key'"):
        calibrate(loaded, [images[0]], [masks[0]], kinds=("value",))
    with pytest.raises(InvalidInputError, match="same non-zero number"):
        calibrate(loaded, [images[0]], [])
    with pytest.raises(InvalidInputError, match="integer labels of shape"):
        calibrate(loaded, [images[0]], [masks[0][:10]], short_side=64, crop=32)
    one_class = np.ones((64, 64), np.int64)
    with pytest.raises(InvalidInputError, match="two or more"):
        calibrate(loaded, [images[0]], [one_class], short_side=64, crop=32)


# -- profiles ---------------------------------------------------------------------------------
def test_profile_round_trip_and_registry_lookup(tiny_clip, tiny_model_name, tmp_path):
    loaded = wrap_model(tiny_clip, name=tiny_model_name, device="cpu")
    image, mask = _scene(0)
    report = calibrate(loaded, [image], [mask], short_side=32, crop=32)
    path = report.save_profile("my-cells", checkpoint="/data/tiny.safetensors")
    assert path.parent == tmp_path / "home" / "profiles" and path.suffix == ".json"
    entry = get_profile("my-cells")
    assert entry == report.profile_entry("my-cells", checkpoint="/data/tiny.safetensors")
    assert entry.key == "my-cells" and entry.middle_layer == report.best_layer
    assert (entry.crop, entry.stride, entry.short_side) == (32, 16, 32)
    assert entry.arch == loaded.entry.arch and "calibrate" in entry.middle_layer_source
    assert list_profiles() == ["my-cells"]
    assert "my-cells" in list_models() and get_entry("my-cells") == entry
    assert get_profile("nothing") is None and get_profile("ViT-B-16/openai") is None
    with pytest.raises(InvalidConfigError, match="profile name"):
        save_profile("../escape", entry)
    assert delete_profile("my-cells") and list_profiles() == []


def test_malformed_profile_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "home" / "profiles"
    folder.mkdir(parents=True)
    (folder / "bad.json").write_text('{"version": 1, "entry": {"key": "bad"}}')
    with pytest.raises(InvalidInputError, match="incomplete entry"):
        get_profile("bad")


def test_cli_calibrate_saves_a_profile(tiny_clip, tiny_model_name, tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_clip.state_dict(), ckpt)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for s in range(2):
        image, mask = _scene(s)
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "img" / f"s{s}.png")
        Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "lab" / f"s{s}.png")
    out = tmp_path / "cal"
    code = main(["calibrate", "--model", tiny_model_name, "--checkpoint", str(ckpt),
                 "--device", "cpu", "--images", str(tmp_path / "img"), "--masks",
                 str(tmp_path / "lab"), "--short-side", "32", "--crop", "32",
                 "--profile", "tiny-cal", "-o", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "calibration.json").read_text())
    assert data["images"] == 2 and data["windows"] == 2
    assert (out / "calibration.png").stat().st_size > 1000
    entry = get_profile("tiny-cal")
    assert entry.middle_layer == data["best_layer"] and entry.checkpoint == str(ckpt.resolve())
    assert "--model tiny-cal" in capsys.readouterr().out
    # the profile is a model name like any other: it loads with its checkpoint and layer
    loaded = load_model(ModelConfig(model="tiny-cal", device="cpu"))
    assert loaded.entry.middle_layer == data["best_layer"] and loaded.entry.crop == 32
