"""Which model the widget offers first, how it labels the models, and quick offline checks.

- :func:`best_model`: the first model of the registry whose weights are on this machine (the
  registry lists the paper's default ``ViT-B-16/openai`` first), else the bundled demo model;
  never a model that would sit waiting for a download that cannot happen.
- :func:`display_name`: the text of a model in the combo box: the bundled demo model is marked
  as a toy, a model whose weights are not here as needing a download.
- :func:`check_weights`: before a load, fail within seconds (not after a minute of network
  retries) when the weights are neither here nor downloadable, with a message that says how to
  get them (:mod:`napari_clipseg.messages`).
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from urllib.parse import urlparse

from clipseg.config import ModelConfig
from clipseg.errors import ModelLoadError

from .messages import weights_missing

#: Seconds the connection probe may take before the network counts as unreachable.
PROBE_SECONDS = 2.0
TOY_MARK = "toy demo model"
#: The marks in the model box (short: the box must not widen the dock).
TOY_LABEL = "toy"
DOWNLOAD_MARK = "download needed"


def toy_models() -> set[str]:
    """Names of the bundled demo models (trained here on synthetic shapes: toys)."""
    from clipseg.models.bundled import BUNDLED_ENTRIES

    return {entry.key for entry in BUNDLED_ENTRIES}


def is_toy(name: str) -> bool:
    """Whether ``name`` is a bundled demo model."""
    return name in toy_models()


def available(name: str, checkpoint: str | None = None) -> bool:
    """Whether the weights of model ``name`` (or ``checkpoint``) are on this machine."""
    from clipseg.models import weights_available

    try:
        return weights_available(ModelConfig(model=name, checkpoint=checkpoint))
    except ModelLoadError:
        return False


def best_model(names: Sequence[str]) -> str:
    """The first of ``names`` (registry order) that can load now; else the demo model."""
    toys = toy_models()
    for name in names:
        if name not in toys and available(name):
            return name
    for name in names:
        if name in toys:
            return name
    return names[0]


def display_name(name: str, is_available: bool | None = None) -> str:
    """The combo-box text of model ``name``."""
    if is_toy(name):
        return f"{name}  ({TOY_LABEL})"
    if is_available is None:
        is_available = available(name)
    return name if is_available else f"{name}  ({DOWNLOAD_MARK})"


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the weights server answers within ``timeout`` seconds (name lookup included)."""
    if _offline_flag():
        return False
    host, port = _endpoint()
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="clipseg-probe")
    thread.start()
    thread.join(timeout)  # a hung name lookup is left behind, not waited for
    return bool(outcome and outcome[0])


def check_weights(config: ModelConfig) -> None:
    """Raise a GUI-worded :class:`ModelLoadError` at once if the weights cannot be had now.

    A model whose weights are here passes; one that needs a download passes only if the
    server answers within :data:`PROBE_SECONDS`. A missing checkpoint file fails.
    """
    if config.checkpoint is not None:
        if not os.path.isfile(config.checkpoint):
            raise ModelLoadError(f"The weights file {config.checkpoint} does not exist. Choose "
                                 "an existing file in 'checkpoint', or clear that field to use "
                                 "the model's own weights.")
        return
    if available(config.model):
        return
    from clipseg.models import get_entry

    entry = get_entry(config.model)
    if entry.pretrained is None and entry.checkpoint is None:
        raise ModelLoadError(f"The model '{config.model}' has no weights of its own. Choose a "
                             "weights file for it in 'checkpoint', or pick another model.")
    if _offline_flag():
        raise ModelLoadError(weights_missing(config.model, "downloads are switched off on "
                                             "this computer (HF_HUB_OFFLINE)"))
    if not reachable():
        host, _port = _endpoint()
        raise ModelLoadError(weights_missing(config.model, f"{host} cannot be reached"))
