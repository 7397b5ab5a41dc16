"""The on-disk text-embedding cache: keys, integrity, permissions, bound, sharing."""
from __future__ import annotations

import dataclasses
import os
import stat
import threading

import numpy as np
import pytest
import torch

from clipseg.config import ModelConfig, SegmentConfig
from clipseg.errors import InvalidConfigError
from clipseg.models import wrap_model
from clipseg.pipeline import Segmenter
from clipseg.text import TextEncoder, parse_classes
from clipseg.text_cache import TextCache, default_text_cache_dir, open_text_cache
from tests.core.test_text import CountingModel
from tests.tiny_models import make_tiny_clip

TEMPLATES = ["a {}", "the {}", "a photo of the {}."]


def _counting(seed=3, name="clipseg-test-tiny", clip=None):
    clip = make_tiny_clip(seed=seed) if clip is None else clip
    loaded = wrap_model(clip, name=name)
    counting = CountingModel(clip)
    loaded.model = counting
    return loaded, counting


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.suffix == ".emb" and not p.name.startswith("."))


def test_a_second_encoder_reads_what_the_first_wrote(tmp_path):
    loaded, counting = _counting()
    first = TextEncoder(loaded, templates=TEMPLATES, disk_cache=TextCache(tmp_path))
    emb, _ = first.encode(parse_classes("road; street, building"))
    assert counting.prompts == 9 and len(_files(tmp_path)) == 3
    again, counted = _counting(clip=counting.clip)  # a new process would start like this
    second = TextEncoder(again, templates=TEMPLATES, disk_cache=TextCache(tmp_path))
    steps = second.iter_encode(parse_classes("building, road; street"))
    with pytest.raises(StopIteration) as done:
        next(steps)  # nothing to encode: no progress step at all
    assert counted.prompts == 0
    torch.testing.assert_close(done.value.value[0], emb[[2, 0, 1]], atol=0, rtol=0)


def test_key_is_the_text_weights_the_prompts_and_the_dtype_not_the_name(tmp_path):
    cache = TextCache(tmp_path)
    loaded, _ = _counting(seed=3)
    TextEncoder(loaded, templates=TEMPLATES, disk_cache=cache).embed(["cat"])
    renamed, counting = _counting(seed=3, name="another-name")  # same weights, other name
    TextEncoder(renamed, templates=TEMPLATES, disk_cache=cache).embed(["cat"])
    assert counting.prompts == 0
    other, counting = _counting(seed=4)  # other weights
    TextEncoder(other, templates=TEMPLATES, disk_cache=cache).embed(["cat"])
    assert counting.prompts == 3
    same, counting = _counting(seed=3)
    TextEncoder(same, templates=TEMPLATES[:2], disk_cache=cache).embed(["cat"])  # other prompts
    assert counting.prompts == 2
    TextEncoder(dataclasses.replace(same, compute_dtype=torch.bfloat16), templates=TEMPLATES,
                disk_cache=cache).embed(["cat"])  # other dtype
    assert counting.prompts == 5
    assert len(_files(tmp_path)) == 4


@pytest.mark.parametrize("damage", [
    lambda data: b"",                                   # empty (a crash before any write)
    lambda data: data[: len(data) // 2],                 # cut short
    lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:],   # one bit flipped
    lambda data: b"not an entry at all" * 20,
])
def test_a_corrupt_entry_is_ignored_and_rewritten(tmp_path, damage):
    loaded, counting = _counting()
    cache = TextCache(tmp_path)
    good = TextEncoder(loaded, templates=TEMPLATES, disk_cache=cache).embed(["cat"])
    (path,) = _files(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    encoder = TextEncoder(loaded, templates=TEMPLATES, disk_cache=cache)
    torch.testing.assert_close(encoder.embed(["cat"]), good, atol=0, rtol=0)
    assert counting.prompts == 6  # encoded again ...
    assert cache.get(path.stem) is not None  # ... and the entry is whole again


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_entries_are_as_readable_as_the_umask_allows(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        cache = TextCache(tmp_path / "cache")
    finally:
        os.umask(old)
    cache.put("k" * 32, torch.ones(4))
    assert stat.S_IMODE((tmp_path / "cache" / ("k" * 32 + ".emb")).stat().st_mode) == mode
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_the_folder_is_held_under_its_bound_least_recently_used_first(tmp_path):
    entry = 8 + 4 + 4 * 16 + 16
    cache = TextCache(tmp_path, max_bytes=10 * entry)
    for i in range(10):
        cache.put(f"{i:032d}", torch.full((16,), float(i)))
        os.utime(tmp_path / f"{i:032d}.emb", (1000 + i, 1000 + i))
    assert cache.get(f"{0:032d}") is not None  # a hit makes entry 0 the most recent
    for i in range(10, 16):
        cache.put(f"{i:032d}", torch.full((16,), float(i)))
    cache.trim()
    assert cache.size_bytes() <= 10 * entry
    kept = {p.stem for p in _files(tmp_path)}
    assert f"{0:032d}" in kept and f"{15:032d}" in kept
    assert f"{1:032d}" not in kept and f"{6:032d}" not in kept
    assert len(kept) == 10


def test_an_unwritable_folder_warns_once_and_encoding_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    loaded, _ = _counting()
    encoder = TextEncoder(loaded, templates=TEMPLATES, disk_cache=TextCache(blocker / "text"))
    with pytest.warns(RuntimeWarning, match="cannot write") as record:
        emb = encoder.embed(["cat", "dog"])
    assert len(record) == 1 and emb.shape == (2, 32)


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path):
    """Writers replace the same entry over and over; a reader always finds a whole one."""
    cache = TextCache(tmp_path)
    key = "c" * 32
    values = [torch.full((4096,), 1.0), torch.full((4096,), 2.0)]
    cache.put(key, values[0])
    stop = threading.Event()

    def write(vector):
        writer = TextCache(tmp_path)
        while not stop.is_set():
            writer.put(key, vector)

    threads = [threading.Thread(target=write, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    try:
        seen = set()
        for _ in range(300):
            got = TextCache(tmp_path).get(key)
            assert got is not None, "a reader saw a missing or partial entry"
            assert bool((got == got[0]).all())
            seen.add(float(got[0]))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert seen <= {1.0, 2.0}


def test_open_text_cache_settings(tmp_path, monkeypatch):
    assert open_text_cache("none") is None and open_text_cache("None") is None
    assert open_text_cache(str(tmp_path)).directory == tmp_path
    monkeypatch.setenv("CLIPSEG_TEXT_CACHE", str(tmp_path / "env"))
    assert open_text_cache("auto").directory == tmp_path / "env"
    monkeypatch.setenv("CLIPSEG_TEXT_CACHE", "none")
    assert open_text_cache("auto") is None
    monkeypatch.delenv("CLIPSEG_TEXT_CACHE")
    if os.name == "posix" and os.uname().sysname == "Linux":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_text_cache_dir() == tmp_path / "xdg" / "clipseg" / "text"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert default_text_cache_dir() == tmp_path / "home" / ".cache" / "clipseg" / "text"
    with pytest.raises(InvalidConfigError, match="text_cache"):
        open_text_cache("  ")
    with pytest.raises(InvalidConfigError, match="text_cache"):
        ModelConfig(text_cache="")


def test_segmenter_uses_the_configured_cache_across_instances(tmp_path, tiny_clip,
                                                             tiny_model_name):
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    config = SegmentConfig().replace(model=tiny_model_name, device="cpu", prompts="imagenet7",
                                     text_cache=str(tmp_path), short_side=None, crop=32,
                                     stride=16)
    first = Segmenter(config, model=tiny_clip)
    steps = [p for p in first.run(image, "road; street, sky") if p.stage == "text"]
    assert steps[-1].done == 3 and len(_files(tmp_path)) == 3
    second = Segmenter(config, model=tiny_clip)
    progress = list(second.run(image, "road; street, sky"))
    assert [(p.done, p.total) for p in progress if p.stage == "text"] == [(0, 1)]
    off = Segmenter(config.replace(text_cache="none"), model=tiny_clip)
    assert off.text_encoder.disk_cache is None
    np.testing.assert_array_equal(drain_labels(second, image), drain_labels(off, image))


def drain_labels(segmenter, image):
    return segmenter.segment(image, "road; street, sky").labels
