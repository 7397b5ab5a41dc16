"""The memory estimate (clipseg.memory): how it moves with the options, the refusal, the budget,
and one measured run that the estimate must bound."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipseg.config import SegmentConfig
from clipseg.errors import InvalidConfigError
from clipseg.memory import (
    GIB,
    ModelFacts,
    check_memory,
    estimate_memory,
    format_bytes,
    memory_budget,
)
from clipseg.models import wrap_model
from clipseg.pipeline import Segmenter
from clipseg.resolve import resolve_config

ROOT = Path(__file__).resolve().parents[2]
BIG = (2048, 1536)


def cfg(**options) -> SegmentConfig:
    """Resolved options of ViT-B-16/openai (no weights: the registry's values)."""
    base = {"model": "ViT-B-16/openai", "short_side": 448, "crop": 224, "stride": 112}
    return resolve_config(SegmentConfig().replace(**{**base, **options}))


def peak(size=BIG, maps=8, **options) -> int:
    return estimate_memory(cfg(**options), *size, maps).peak


def test_peak_grows_with_the_image_size():
    sizes = [(256, 256), (512, 512), (1024, 768), (2048, 1536), (4096, 3072)]
    peaks = [peak(size) for size in sizes]
    assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks), peaks
    # at a fixed short side the full-size maps grow with the pixels (4x here) while the label
    # chunks and the window pass do not: more than twice, at most 4x
    assert 2.0 < peaks[4] / peaks[3] <= 4.0


def test_peak_grows_with_the_number_of_classes():
    peaks = [peak(maps=k) for k in (2, 8, 32)]
    assert peaks[0] < peaks[1] < peaks[2]
    parts = [estimate_memory(cfg(), *BIG, k).parts["logits at output resolution"]
             for k in (8, 32)]
    assert parts[1] == 4 * parts[0]  # K x H x W floats


def test_window_batch_grows_with_batch_size_up_to_the_number_of_windows():
    small = estimate_memory(cfg(batch_size=1), *BIG, 8)
    four = estimate_memory(cfg(batch_size=4), *BIG, 8)
    assert four.parts["window batch"] == 4 * small.parts["window batch"]
    assert four.phases["windows"] > small.phases["windows"]
    # a 448x448 working image has 9 windows of 224/112: a larger batch holds no more
    nine = estimate_memory(cfg(batch_size=9), 448, 448, 8).parts["window batch"]
    assert estimate_memory(cfg(batch_size=64), 448, 448, 8).parts["window batch"] == nine


def test_pamr_adds_its_phase_and_pamr_tile_bounds_it():
    off = estimate_memory(cfg(), *BIG, 8)
    on = estimate_memory(cfg(pamr=True), *BIG, 8)
    assert "pamr" not in off.phases and "PAMR" not in off.parts
    assert on.phases["pamr"] > off.phases["labels"] and on.peak > off.peak
    # one tile's work may stay resident under the next tile and the labels that follow
    assert on.phases["labels"] == off.phases["labels"] + on.parts["PAMR tile"]
    assert on.phases["pamr"] > on.parts["PAMR"] + on.parts["PAMR tile"]
    assert on.peak == max(on.phases.values()) + on.parts["allocator slack"]
    small_tile = estimate_memory(cfg(pamr=True, pamr_tile=128), *BIG, 8)
    assert small_tile.parts["PAMR"] < on.parts["PAMR"]
    more = estimate_memory(cfg(pamr=True, pamr_dilations=(8, 16, 24)), *BIG, 8)
    assert more.parts["PAMR"] > on.parts["PAMR"]


def test_crop_0_grows_with_the_working_area_faster_than_the_area():
    def batch(short):
        return estimate_memory(cfg(crop=0, short_side=short), *BIG, 8).parts["window batch"]

    # one window of the whole working image: tokens grow with its area, attention with its
    # square, so doubling the short side (4x the area) costs more than 4x
    assert batch(896) > 4 * batch(448)
    # a window of 224 holds the same whatever the working size, less than one of 448 x 597
    sliding = [estimate_memory(cfg(short_side=s, batch_size=1), *BIG, 8).parts["window batch"]
               for s in (448, 896)]
    assert sliding[0] == sliding[1] < batch(448)


def test_cached_relabel_counts_no_window_pass():
    full = estimate_memory(cfg(), *BIG, 8)
    cached = estimate_memory(cfg(), *BIG, 8, cached=True)
    assert cached.parts["window batch"] == 0 and cached.parts["working image"] == 0
    assert cached.phases["windows"] < full.phases["windows"] and cached.peak <= full.peak


def test_refusal_names_the_sizes_the_budget_and_the_options():
    config = cfg(short_side=2048)  # an enlarged working image: it is the largest part
    estimate = estimate_memory(config, *BIG, 2)
    assert estimate.largest_part() == "working image"
    budget = estimate.peak // 2
    with pytest.raises(InvalidConfigError) as info:
        check_memory(config, *BIG, 2, budget=budget, budget_source="max_memory 0.5 GiB")
    text = str(info.value)
    assert "2048x1536 image" in text and "short_side 2048" in text
    rh, rw = estimate.working
    assert f"working size {rh}x{rw}" in text
    assert format_bytes(estimate.peak) in text and format_bytes(budget) in text
    assert "max_memory 0.5 GiB" in text and "--max-memory" in text
    assert "lower short_side (at most" in text
    fit = int(text.split("lower short_side (at most ")[1].split()[0])
    assert fit < 2048 and fit % 16 == 0
    assert estimate_memory(cfg(short_side=fit), *BIG, 2).peak <= budget
    assert estimate_memory(cfg(short_side=fit + 16), *BIG, 2).peak > budget
    # the same call within the budget returns the estimate
    assert check_memory(config, *BIG, 2, budget=estimate.peak).peak == estimate.peak


def test_refusal_of_a_class_bound_peak_says_fewer_classes():
    config = cfg()
    estimate = estimate_memory(config, *BIG, 64)
    assert estimate.largest_part() == "probabilities"
    with pytest.raises(InvalidConfigError, match="use fewer classes"):
        check_memory(config, *BIG, 64, budget=estimate.peak - 1)


def test_refusal_of_a_pamr_peak_names_pamr_tile():
    config = cfg(pamr=True, pamr_tile=4096)
    estimate = estimate_memory(config, *BIG, 8)
    assert estimate.largest_part() in ("PAMR", "PAMR tile")
    with pytest.raises(InvalidConfigError, match="lower pamr_tile"):
        check_memory(config, *BIG, 8, budget=estimate.peak - 1)


def test_budget_from_the_option_and_the_environment(monkeypatch):
    monkeypatch.delenv("CLIPSEG_MAX_MEMORY", raising=False)
    assert memory_budget(SegmentConfig().replace(max_memory=1.5)) == (int(1.5 * GIB),
                                                                     "max_memory 1.5 GiB")
    assert memory_budget(SegmentConfig().replace(max_memory=0))[0] is None
    monkeypatch.setenv("CLIPSEG_MAX_MEMORY", "2")
    assert memory_budget(SegmentConfig())[0] == 2 * GIB
    monkeypatch.setenv("CLIPSEG_MAX_MEMORY", "lots")
    with pytest.raises(InvalidConfigError, match="CLIPSEG_MAX_MEMORY: expected a number"):
        memory_budget(SegmentConfig())


def test_model_facts_of_an_arch_match_the_tower(tiny_clip, tiny_model_name):
    seg = Segmenter(SegmentConfig().replace(model=tiny_model_name),
                    model=wrap_model(tiny_clip, name=tiny_model_name))
    from_tower = ModelFacts.of_tower(seg.encoder.tower)
    from_arch = ModelFacts.of_arch(tiny_model_name)
    assert from_arch is not None
    for name in ("patch_size", "width", "heads", "layers", "output_dim"):
        assert getattr(from_arch, name) == getattr(from_tower, name), name
    assert ModelFacts.of_arch("no-such-arch") is None


def test_segmenter_refuses_before_any_work(tiny_clip, tiny_model_name):
    config = SegmentConfig().replace(model=tiny_model_name, short_side=0, crop=32, stride=16,
                                     max_memory=0.01)  # 10 MiB
    seg = Segmenter(config, model=wrap_model(tiny_clip, name=tiny_model_name),
                    templates=("{}",))
    image = np.zeros((1024, 1024, 3), dtype=np.uint8)
    with pytest.raises(InvalidConfigError, match="max_memory 0.01 GiB"):
        seg.segment(image, "cat, dog, sky")
    assert not seg.has_cache  # no window was encoded


def _measure(case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"),
                           "--child", json.dumps(case), "--threads", "1"], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    return json.loads(line[0][len("RESULT "):])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_measured_peak_of_a_run_is_within_its_estimate():
    """A real run in a fresh process (benchmarks/bench_memory.py's measurement: peak RSS above
    the RSS after model load and warm-up) stays under its estimate and not far below it.

    The image is large enough (1536 x 1024, 16 classes, PAMR) for the full-size maps and PAMR's
    tiles to dominate, so the figure is hundreds of MiB, well above the allocator's noise. A
    memory figure does not depend on the machine's load (only its wall time does)."""
    case = {"name": "test", "arch": "tiny", "size": [1536, 1024], "classes": 16,
            "options": {"short_side": 256, "crop": 64, "stride": 64, "batch_size": 8,
                        "pamr": True, "pamr_tile": 256, "pamr_iterations": 2}}
    result = _measure(case)
    ratio = result["measured"] / result["estimate"]
    assert result["estimate"] > 256 << 20
    assert 0.4 <= ratio <= 1.0, (ratio, result["phases"], result["estimate_phases"])
