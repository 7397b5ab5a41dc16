"""The run logic without Qt threads: Session.run drained synchronously, relabel, cancel."""
from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image

from clipseg.config import SegmentConfig
from clipseg.errors import ModelLoadError
from napari_clipseg.image_source import image_source
from napari_clipseg.job import JobFailure, JobRequest, Session, drive, guarded_run
from tests.plugin.conftest import TINY, reference

CLASSES = "cat\ngrass"


@pytest.fixture
def session(tiny_loaded):
    s = Session()
    s.add_model(TINY, tiny_loaded)
    return s


def _request(image, classes=CLASSES, **options):
    layer = Image(image, contrast_limits=(0.0, 1.0), rgb=True)
    flat = {"model": TINY, "device": "cpu", "short_side": 0, "batch_size": 2, **options}
    source = image_source(layer, (0.0, 0.0))
    return JobRequest(source=source, planes=[()], classes=classes,
                      config=SegmentConfig.from_flat(flat))


def test_drive_returns_the_engine_result_with_progress(session, tiny_loaded):
    image = np.random.default_rng(0).random((40, 48, 3), dtype=np.float32)
    steps = []
    result = drive(session.run(_request(image)), steps.append)
    ref = reference(tiny_loaded, image, CLASSES)
    np.testing.assert_array_equal(result.labels[()], ref.labels)
    assert result.class_names == ["cat", "grass"] and not result.relabelled
    stages = [s.stage for s in steps]
    assert stages[0] == "model" and "windows" in stages and stages[-1] == "labels"


def test_only_label_options_changed_means_relabel(session, tiny_loaded):
    image = np.random.default_rng(1).random((40, 48, 3), dtype=np.float32)
    first = _request(image)
    drive(session.run(first))
    again = _request(image, classes="grass\nsky", threshold=0.5)
    again = JobRequest(source=first.source, planes=[()], classes=again.classes,
                       config=again.config)
    assert session.can_relabel(again)
    result = drive(session.run(again))
    assert result.relabelled
    ref = reference(tiny_loaded, image, "grass\nsky", threshold=0.5)
    np.testing.assert_array_equal(result.labels[()], ref.labels)
    # a different window setting needs the ViT again
    other = JobRequest(source=first.source, planes=[()], classes=CLASSES,
                       config=first.config.replace(stride=8))
    assert not session.can_relabel(other)


def test_closing_the_generator_mid_run_leaves_no_cache(session):
    image = np.random.default_rng(2).random((64, 64, 3), dtype=np.float32)
    request = _request(image, batch_size=1)
    gen = session.run(request)
    for step in gen:
        if step.stage == "windows":
            break
    gen.close()  # what a cancelled worker amounts to
    assert not session.can_relabel(request)


def test_engine_errors_come_back_as_a_failure_message(session):
    image = np.zeros((40, 48, 3), np.float32)
    request = _request(image, model="ViT-B-16/openai", checkpoint="/no/such/file.safetensors")
    result = drive(guarded_run(session, request))
    assert isinstance(result, JobFailure) and "/no/such/file.safetensors" in result.message


def test_a_live_request_never_runs_the_vit(session):
    image = np.random.default_rng(3).random((40, 48, 3), dtype=np.float32)
    live = JobRequest(source=_request(image).source, planes=[()], classes=CLASSES,
                      config=_request(image).config, live=True)
    result = drive(guarded_run(session, live))  # nothing cached yet
    assert isinstance(result, JobFailure) and result.message.startswith("live update")
    drive(session.run(_request(image)))
    other = np.random.default_rng(4).random((40, 48, 3), dtype=np.float32)
    moved = JobRequest(source=_request(other).source, planes=[()], classes=CLASSES,
                       config=_request(other).config, live=True)
    result = drive(guarded_run(session, moved))  # another image: not cached either
    assert isinstance(result, JobFailure) and "no cached embeddings" in result.message


def test_a_failed_model_load_is_a_message_and_the_next_run_loads_again(tiny_loaded):
    calls = []

    def loader(config):
        calls.append(config.model)
        if len(calls) == 1:
            raise ModelLoadError("The weights file x does not exist.")
        return tiny_loaded

    session = Session(loader=loader)
    image = np.random.default_rng(5).random((40, 48, 3), dtype=np.float32)
    request = _request(image, model="ViT-B-16/openai")
    failed = drive(guarded_run(session, request))
    assert isinstance(failed, JobFailure) and "does not exist" in failed.message
    result = drive(guarded_run(session, request))
    assert calls == ["ViT-B-16/openai"] * 2 and result.labels[()].shape == (40, 48)
