"""Shared fixtures: tiny open_clip models built in-process (random init, no downloads)."""
from __future__ import annotations

import os

# A test must never reach for the network. huggingface_hub reads this once, at import, so it is
# set before anything imports open_clip.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never share text embeddings through the user's cache folder; the cache tests pass their
# own folder (tmp_path).
os.environ["CLIPSEG_TEXT_CACHE"] = "none"

import pytest
import torch

from tests.tiny_models import TINY_NAME, make_tiny_clip, register_tiny_config

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_model_name() -> str:
    """Name of a tiny open_clip ViT config registered with open_clip for this session."""
    register_tiny_config()
    return TINY_NAME


@pytest.fixture(scope="session")
def tiny_clip(tiny_model_name):
    """A tiny random-init open_clip CLIP in eval mode (ViT: 4 blocks, width 64, patch 8, 32 px)."""
    return make_tiny_clip()


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
