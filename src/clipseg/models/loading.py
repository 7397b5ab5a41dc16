"""Loading CLIP weights: pretrained tags, local checkpoint files, already-built models.

Three ways in, one result (:class:`LoadedModel`):

- a pretrained tag (``ModelConfig(model="ViT-B-16/openai")``), an ``hf-hub:`` model
  (``"biomedclip"``) or an entry's Hugging Face checkpoint file (``"remoteclip-b32"``): the
  weights are fetched into the Hugging Face / open_clip cache on first use; offline without a
  cached copy a :class:`~clipseg.errors.ModelLoadError` says what is missing, where the cache is
  and how to pass a local file instead (:func:`clipseg.models.hub.offline_error`). A randomly
  initialised model is never returned in place of missing weights.
- a local checkpoint (``ModelConfig(model=..., checkpoint=PATH)``): the architecture is built
  without weights and the file is read by :func:`load_checkpoint_safely`, which never unpickles
  code.
- an open_clip model object the caller built (:func:`wrap_model`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from torch import nn

from ..config import ModelConfig
from ..errors import (
    InvalidConfigError,
    InvalidInputError,
    ModelLoadError,
    UnsupportedModelError,
    describe,
)
from .checkpoint import load_checkpoint_safely, load_state_into
from .hub import cache_status, check_requirements, fetch_hub_file, hub_model_files, offline_error
from .hub import cached_hf_file as _cached_hf_file
from .registry import ModelEntry, entry_for, get_entry, optional_module, synthesise_entry

__all__ = ["LoadedModel", "load_model", "wrap_model", "load_checkpoint_safely", "check_finite",
           "resolve_device", "resolve_precision", "weights_available"]

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass
class LoadedModel:
    """An open_clip CLIP ready for inference, with what the engine needs to use it.

    Attributes
    ----------
    model : open_clip.CLIP
        In eval mode, ``requires_grad`` off, parameters on ``device`` (float32 from
        :func:`load_model`; :func:`wrap_model` keeps the dtype it is given).
    tokenizer : callable
        ``list[str] -> LongTensor (N, context_length)`` (CPU).
    entry : ModelEntry
        Registry defaults (middle layer, window, logit scale).
    mean, std : tuple of 3 floats
        Per-channel normalisation of [0, 1] RGB pixels the weights were trained with.
    device : torch.device
    name : str
        Name shown to users and written to sidecar files (``"ViT-B-16/openai"``, a checkpoint
        path, ``"custom"``).
    compute_dtype : torch.dtype
        Dtype to run the model in (autocast): ``float16`` for ``precision="auto"`` on CUDA,
        else ``float32``; ``fp16``/``bf16`` as asked. Weights stay float32.
    """

    model: nn.Module
    tokenizer: Tokenizer
    entry: ModelEntry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    name: str
    compute_dtype: torch.dtype = torch.float32


def resolve_device(name: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a usable device.

    ``auto`` picks CUDA if available, else MPS if available, else CPU.

    Raises
    ------
    InvalidConfigError
        Unknown name, or the asked-for accelerator is not available on this machine.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise InvalidConfigError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', "
                                 f"got {name!r}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_ok:
            raise InvalidConfigError("device: 'mps' was asked for but Apple's MPS backend is not "
                                     "available here; choose the device auto or cpu "
                                     "(--device auto)")
        return torch.device("mps")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InvalidConfigError(f"device: {name!r} was asked for but CUDA is not available "
                                     "(no GPU or a CPU-only torch); choose the device auto or cpu "
                                     "(--device auto)")
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InvalidConfigError(f"device: expected cuda:0 .. cuda:{count - 1} on this "
                                     f"machine, got {name!r}")
        return device
    raise InvalidConfigError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', "
                             f"got {name!r}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype for ``precision`` (``auto``/``fp32``/``fp16``/``bf16``) on ``device``."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in table:
        raise InvalidConfigError(f"precision: expected one of auto, fp32, fp16, bf16, "
                                 f"got {precision!r}")
    return table[precision]


# -- building ------------------------------------------------------------------------------------

def _arch_known(entry: ModelEntry) -> bool:
    """Whether open_clip knows ``entry.arch``; bundled configs are registered on demand."""
    if entry.is_hf_hub:  # open_clip reads the config from the Hugging Face repo
        return True
    if entry.arch not in open_clip.list_models():
        bundled = optional_module("bundled")
        if bundled is not None and any(e.arch == entry.arch for e in bundled.BUNDLED_ENTRIES):
            bundled.register_bundled_configs()
    return entry.arch in open_clip.list_models()


def _tag_settings(entry: ModelEntry) -> tuple[bool, dict[str, Any]]:
    """QuickGELU flag and preprocessing of ``entry``'s pretrained tag."""
    if entry.pretrained is None:
        return False, {}
    cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained)
    pre = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    return bool(cfg.get("quick_gelu", False)), pre


class _DropRandomInitWarning(logging.Filter):
    """Drop open_clip's "initialized randomly" warning while we load the weights ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


def _create(entry: ModelEntry, device: torch.device, pretrained: str | None, *,
            cache_dir: str | None = None) -> nn.Module:
    """Build ``entry.arch``; ``pretrained`` None = empty weights that the caller fills next.

    For an ``hf-hub:`` entry ``pretrained`` is only a flag: any non-None value makes open_clip
    load the repo's own weights (already cached by :func:`~.hub.hub_model_files`) and fail if it
    cannot; None builds the architecture from the repo's config only.
    """
    quick_gelu, pre = _tag_settings(entry)
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    if pretrained is None:
        root.addFilter(quiet)
    if entry.is_hf_hub:
        load = pretrained is not None
        name, pretrained = entry.arch, None
        extra: dict[str, Any] = {"load_weights": load, "require_pretrained": load,
                                 "cache_dir": cache_dir}
    else:
        name, extra = entry.arch, {}
    try:
        return open_clip.create_model(name, pretrained=pretrained, device=device,
                                      force_quick_gelu=quick_gelu, weights_only=True,
                                      force_preprocess_cfg=pre or None, **extra)
    except (RuntimeError, OSError, ValueError, KeyError, ImportError) as exc:
        raise ModelLoadError(f"model {entry.key!r}: open_clip could not build it: {exc}") from exc
    finally:
        root.removeFilter(quiet)


def weights_available(config: ModelConfig) -> bool:
    """Whether :func:`load_model` finds the weights of ``config`` on this machine.

    Looks only at local files (the checkpoint, the entry's own file, the Hugging Face and
    open_clip caches); never touches the network. False for an unknown model name.
    """
    try:
        entry = entry_for(config)
    except (InvalidConfigError, UnsupportedModelError):
        return False
    if config.checkpoint is not None:
        return os.path.isfile(config.checkpoint)
    return cache_status(entry, config.cache_dir) in ("cached", "local file")


def _weights_path(entry: ModelEntry, cache_dir: str | None) -> str:
    """Local path of the weights of ``entry.pretrained``: the cached copy, else downloaded."""
    cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained)
    cached = _cached_hf_file(cfg, cache_dir)
    if cached is not None:
        return cached
    try:  # URL sources are checked against their cached copy by open_clip itself
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except (OSError, RuntimeError, ValueError) as exc:  # urllib/hf_hub errors are OSError
        what = f"the weights for pretrained tag {entry.pretrained!r} of {entry.arch}"
        raise offline_error(entry, what, cache_dir, exc) from exc
    if not path:
        raise ModelLoadError(f"model {entry.key!r}: open_clip has no download source for tag "
                             f"{entry.pretrained!r}; pass checkpoint=PATH")
    return path


def _entry_checkpoint(entry: ModelEntry, config: ModelConfig) -> str | None:
    """The weights file to load: the user's, the entry's own, or its Hugging Face file."""
    checkpoint = config.checkpoint or entry.checkpoint
    if checkpoint is None and entry.hub_file is not None:
        repo, filename = entry.hub_file
        what = (f"the weights file {filename!r} (for {entry.arch}) of the Hugging Face repo "
                f"{repo!r}")
        checkpoint = fetch_hub_file(entry, repo, filename, config.cache_dir, what, verb="is")
    return checkpoint


def _mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise UnsupportedModelError(f"expected 3-channel mean/std in the model's preprocess "
                                    f"config, got mean={mean}, std={std}")
    return mean, std


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _tokenizer(arch: str, cache_dir: str | None) -> Tokenizer:
    try:
        return open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"model {arch!r}: the tokenizer could not be loaded: {exc}") from exc


def check_finite(tensors: Any, source: str) -> None:
    """Refuse weights holding NaN or infinity: such a model labels every pixel the same.

    Parameters
    ----------
    tensors : mapping of name to tensor, or an ``nn.Module`` (its state dict is read)
        The weights; non-floating tensors are skipped.
    source : str
        The checkpoint file or model name, for the message.

    Raises
    ------
    ModelLoadError
        Naming the source, the first bad tensor, and how many of its values are not finite.
    """
    if isinstance(tensors, nn.Module):
        tensors = tensors.state_dict()
    bad = []
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() \
                and not bool(torch.isfinite(tensor).all()):
            bad.append((name, tensor))
    if not bad:
        return
    name, tensor = bad[0]
    count = int((~torch.isfinite(tensor)).sum())
    nans = int(torch.isnan(tensor).sum())
    more = f"; {len(bad) - 1} other tensors too" if len(bad) > 1 else ""
    raise ModelLoadError(
        f"checkpoint {source!r}: expected finite weights, got non-finite values in "
        f"{len(bad)} tensor{'s' if len(bad) > 1 else ''}: the first is {name!r} "
        f"{tuple(tensor.shape)} with {count} of {tensor.numel()} values NaN or infinite "
        f"({nans} NaN){more}. The file is damaged or was saved from a diverged training; "
        "use another copy of the weights.")


def load_model(config: ModelConfig) -> LoadedModel:
    """Build the model ``config`` names, with its weights, on the configured device.

    Weights come from ``config.checkpoint`` if given, else the entry's own checkpoint
    (bundled models), else its Hugging Face checkpoint file (``entry.hub_file``), else the
    ``hf-hub:`` repo's own weights, else the pretrained tag (``config.pretrained`` overrides the
    entry's).
    The activation and preprocessing of the entry's tag are applied in every case (OpenAI and
    MetaCLIP weights need QuickGELU), so name the tag (``"ViT-B-16/openai"``) or a
    ``-quickgelu`` architecture when loading such weights from a local file.

    Raises
    ------
    InvalidConfigError
        Unknown model name or tag, unavailable device.
    ModelLoadError
        Weights not cached and not downloadable, a checkpoint that does not fit, no weights
        source at all.
    UnsafeCheckpointError
        A checkpoint that needs code to unpickle.
    """
    if not isinstance(config, ModelConfig):
        raise InvalidConfigError(f"load_model: expected a ModelConfig, got {describe(config)}")
    entry = entry_for(config)
    device = resolve_device(config.device)
    compute_dtype = resolve_precision(config.precision, device)
    if not _arch_known(entry):
        raise ModelLoadError(f"model {entry.key!r}: expected an architecture open_clip knows, got "
                             f"{entry.arch!r} (not in open_clip.list_models())")
    check_requirements(entry)
    checkpoint = _entry_checkpoint(entry, config)
    if checkpoint is not None:
        state = load_checkpoint_safely(checkpoint)
        check_finite(state, str(checkpoint))
        if entry.is_hf_hub:  # the architecture comes from the repo's config
            hub_model_files(entry, config.cache_dir, weights=False)
        model = _create(entry, torch.device("cpu"), None, cache_dir=config.cache_dir)
        load_state_into(model, state, str(checkpoint))
        model = model.to(device)
        name = entry.key if config.checkpoint is None else f"{entry.key}@{checkpoint}"
    elif entry.is_hf_hub:
        hub_model_files(entry, config.cache_dir)
        model = _create(entry, device, entry.arch, cache_dir=config.cache_dir)
        name = entry.key
        check_finite(model, entry.key)
    elif entry.pretrained is not None:
        path = _weights_path(entry, config.cache_dir)
        model = _create(entry, device, path)
        name = entry.key
        check_finite(model, path)
    elif entry.download:
        raise ModelLoadError(
            f"model {entry.key!r}: expected a checkpoint file with its {entry.arch} weights, got "
            f"none; they are not downloaded automatically: {entry.download} "
            "(ModelConfig(checkpoint=PATH), `clipseg ... --checkpoint PATH`, or the widget's "
            "checkpoint field).")
    else:
        tags = open_clip.list_pretrained_tags_by_model(entry.arch)
        raise ModelLoadError(
            f"model {entry.key!r}: expected a pretrained tag or a checkpoint file, got neither; "
            f"a randomly initialised CLIP is useless for segmentation. Use "
            f"'{entry.arch}/TAG' with TAG one of {', '.join(tags) or '(none known)'}, or pass "
            "checkpoint=PATH (--checkpoint PATH, or the widget's checkpoint field).")
    mean, std = _mean_std(model)
    return LoadedModel(model=_freeze(model), tokenizer=_tokenizer(entry.arch, config.cache_dir),
                       entry=entry, mean=mean, std=std, device=device, name=name,
                       compute_dtype=compute_dtype)


def _entry_for_object(model: nn.Module, name: str) -> ModelEntry:
    from .towers import tower_for  # the tower views import open_clip/timm internals

    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(model, "encode_text"):
        raise UnsupportedModelError(
            f"wrap_model: expected an open_clip CLIP (model.visual and encode_text), got "
            f"{type(model).__name__} with visual {type(visual).__name__}")
    tower = tower_for(model)  # refuses unreadable towers, naming what is supported
    layers = tower.num_layers
    try:
        entry = get_entry(name)
    except InvalidConfigError:  # not a known name: defaults come from the model itself
        entry = None
    if entry is not None and entry.middle_layer <= layers:
        return entry
    size = (tower.native_grid[0] * tower.patch_size, tower.native_grid[1] * tower.patch_size)
    made = synthesise_entry(entry.arch if entry else name, None, key=name, layers=layers,
                            patch_size=tower.patch_size, image_size=size)
    if entry is None:
        return made
    why = (f"{made.middle_layer_source} (entry {entry.key!r} wants block {entry.middle_layer}, "
           f"the model has {layers})")
    return dataclasses.replace(made, middle_layer_source=why)


def wrap_model(model: nn.Module, *, name: str = "custom", tokenizer: Tokenizer | None = None,
               device: str | torch.device | None = None) -> LoadedModel:
    """Wrap an already-built open_clip CLIP (e.g. from ``open_clip.create_model``).

    The model is put in eval mode with ``requires_grad`` off (in place).

    Parameters
    ----------
    model : open_clip.CLIP
        A CLIP whose image tower the engine can read: open_clip's ``VisionTransformer`` or a
        timm ``VisionTransformer`` in open_clip's ``TimmModel`` (see
        :data:`clipseg.models.towers.SUPPORTED_TOWERS`).
    name : str
        Registry key/alias or open_clip architecture whose defaults apply; an unknown name
        (``"custom"``) gets defaults synthesised from the model itself (``M = ceil(L/2)``).
    tokenizer : callable or None
        ``list[str] -> LongTensor``; None: open_clip's tokenizer for ``name`` if it is an
        open_clip architecture, else open_clip's ``SimpleTokenizer`` at the model's context
        length (vocab size must then be 49408).
    device : str, torch.device or None
        Move the model there; None keeps it where its parameters are.

    Raises
    ------
    UnsupportedModelError
        Not an open_clip CLIP with a ViT, or no tokenizer can be chosen.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"wrap_model: expected an open_clip CLIP module, got "
                                    f"{describe(model)}")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"wrap_model: expected a non-empty name, got {name!r}")
    entry = _entry_for_object(model, name)
    if device is None:
        param = next(model.parameters(), None)
        target = param.device if param is not None else torch.device("cpu")
    else:
        target = resolve_device(device)
        model = model.to(target)
    if tokenizer is None:
        if _arch_known(entry):
            tokenizer = _tokenizer(entry.arch, None)
        else:
            cfg = open_clip.get_model_tokenize_cfg(model)
            if cfg.get("vocab_size", 49408) != 49408:
                raise UnsupportedModelError(
                    f"wrap_model: the model's vocabulary has {cfg['vocab_size']} tokens, not "
                    "the 49408 of open_clip's SimpleTokenizer; pass tokenizer=")
            tokenizer = open_clip.SimpleTokenizer(context_length=cfg.get("context_length", 77))
    elif not callable(tokenizer):
        raise InvalidInputError(f"wrap_model: expected a callable tokenizer, got "
                                f"{describe(tokenizer)}")
    mean, std = _mean_std(model)
    return LoadedModel(model=_freeze(model), tokenizer=tokenizer, entry=entry, mean=mean,
                       std=std, device=target, name=name.strip(), compute_dtype=torch.float32)
