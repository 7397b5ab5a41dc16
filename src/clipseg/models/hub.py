"""Where an entry's weights are: the Hugging Face / open_clip caches, looked up without network.

:func:`cache_status` says whether ``clipseg models`` can load an entry offline;
:func:`fetch_hub_file` returns a cached file or downloads it, and when it can do neither raises
the one :func:`offline_error` message every weights source shares (what is missing, where the
cache is, how to pass a local file instead).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import open_clip

from ..errors import ModelLoadError
from .registry import HF_HUB_PREFIX, ModelEntry

__all__ = ["cached_hf_file", "cached_hub_file", "fetch_hub_file", "hub_model_files",
           "offline_error", "cache_status", "check_requirements", "HUB_CONFIG_NAME"]

#: The architecture config open_clip reads from an ``hf-hub:`` repo.
HUB_CONFIG_NAME = "open_clip_config.json"
#: Weights names open_clip tries in an ``hf-hub:`` repo, preferred first.
HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError
    return (OSError, ValueError, RuntimeError, EntryNotFoundError)


def cached_hub_file(repo: str, filename: str, cache_dir: str | None = None) -> str | None:
    """Path of ``repo``/``filename`` in the Hugging Face cache, or None; never uses the network."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return found if isinstance(found, str) else None


def cached_hf_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Path of an open_clip pretrained tag's Hugging Face weights if cached, else None."""
    repo, filename = os.path.split(cfg.get("hf_hub", ""))  # as open_clip splits it
    if not repo:
        return None
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]  # open_clip prefers a .safetensors sibling when there is one
    if filename == "open_clip_pytorch_model.bin":
        names.insert(0, "open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    for name in names:
        found = cached_hub_file(repo, name, cache_dir)
        if found is not None:
            return found
    return None


_LOCAL_FILE = ("point at a local weights file: ModelConfig(checkpoint=PATH), `clipseg ... "
               "--checkpoint PATH`, or the widget's checkpoint field")


def offline_error(entry: ModelEntry, what: str, cache_dir: str | None, cause: BaseException,
                  *, verb: str = "are", instead: str = _LOCAL_FILE) -> ModelLoadError:
    """The message for weights that are neither cached nor downloadable.

    ``what`` names the missing files (``verb`` agrees with it); ``instead`` is the offline
    alternative to downloading.
    """
    from huggingface_hub import constants as hf
    where = cache_dir or f"{hf.HF_HUB_CACHE} (Hugging Face cache) or ~/.cache/clip"
    offline = ("HF_HUB_OFFLINE is set" if hf.HF_HUB_OFFLINE else
               "set HF_HUB_OFFLINE=1 to skip the network attempts when offline")
    return ModelLoadError(
        f"model {entry.key!r}: {what} {verb} not in the cache ({where}) and could not be "
        f"downloaded (offline? {offline}). Either connect once to download "
        f"{'it' if verb == 'is' else 'them'}, or {instead}. Cause: {cause}")


def fetch_hub_file(entry: ModelEntry, repo: str, filename: str, cache_dir: str | None,
                   what: str, **message: str) -> str:
    """``repo``/``filename`` from the cache, else downloaded into it.

    Raises
    ------
    ModelLoadError
        Not cached and the download failed (offline, no such repo or file); see
        :func:`offline_error`.
    """
    found = cached_hub_file(repo, filename, cache_dir)
    if found is not None:
        return found
    from huggingface_hub import hf_hub_download
    try:
        return hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir)
    except _hub_errors() as exc:
        raise offline_error(entry, what, cache_dir, exc, **message) from exc


def hub_model_files(entry: ModelEntry, cache_dir: str | None, *, weights: bool = True) -> None:
    """Make sure an ``hf-hub:`` entry's config (and weights) are cached, downloading if needed.

    open_clip then finds them in the cache when it builds the model. Raises
    :class:`ModelLoadError` naming the repo when they can be neither found nor fetched.
    """
    repo = entry.arch[len(HF_HUB_PREFIX):]
    what = f"the open_clip config and weights of the Hugging Face repo {repo!r}"
    message = {"instead": (
        f"download the repo on a connected machine (`hf download {repo}`, huggingface_hub's "
        "command) and bring that Hugging Face cache folder here (HF_HUB_CACHE, or "
        "ModelConfig.cache_dir)")}
    fetch_hub_file(entry, repo, HUB_CONFIG_NAME, cache_dir, what, **message)
    if not weights:
        return
    if any(cached_hub_file(repo, name, cache_dir) for name in HUB_WEIGHT_NAMES):
        return
    errors: list[BaseException] = []
    for name in HUB_WEIGHT_NAMES:
        try:
            fetch_hub_file(entry, repo, name, cache_dir, what, **message)
            return
        except ModelLoadError as exc:
            errors.append(exc.__cause__ or exc)
    raise offline_error(entry, what, cache_dir, errors[-1], **message)


def check_requirements(entry: ModelEntry) -> None:
    """Raise :class:`ModelLoadError` naming the packages of ``entry.requires`` not installed."""
    missing = [name for name in entry.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"model {entry.key!r}: expected the Python package(s) {', '.join(missing)} to be "
            f"installed, found none. Install with `pip install {' '.join(missing)}` and load "
            f"again. {entry.note}".rstrip())


def _url_cached(cfg: dict[str, Any], cache_dir: str | None) -> bool:
    url = cfg.get("url", "")
    if not url:
        return False
    folder = cache_dir or os.path.expanduser("~/.cache/clip")  # as open_clip downloads URLs
    return os.path.isfile(os.path.join(folder, os.path.basename(url)))


def cache_status(entry: ModelEntry, cache_dir: str | None = None) -> str:
    """Where ``entry``'s weights are, without network.

    Returns
    -------
    str
        ``"cached"`` (loads offline), ``"not cached"`` (downloaded on first use),
        ``"local file"`` (the entry's own checkpoint exists), ``"missing file"`` (it does not),
        ``"manual download"`` (``entry.download`` says how; pass the file as checkpoint) or
        ``"no weights"`` (an architecture without a weights source).
    """
    if entry.checkpoint is not None:
        return "local file" if os.path.isfile(entry.checkpoint) else "missing file"
    if entry.is_hf_hub:
        repo = entry.arch[len(HF_HUB_PREFIX):]
        config = cached_hub_file(repo, HUB_CONFIG_NAME, cache_dir)
        weights = any(cached_hub_file(repo, name, cache_dir) for name in HUB_WEIGHT_NAMES)
        return "cached" if config and weights else "not cached"
    if entry.hub_file is not None:
        return "cached" if cached_hub_file(*entry.hub_file, cache_dir) else "not cached"
    if entry.pretrained is not None:
        cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained)
        found = cached_hf_file(cfg, cache_dir) is not None or _url_cached(cfg, cache_dir)
        return "cached" if found else "not cached"
    return "manual download" if entry.download else "no weights"
