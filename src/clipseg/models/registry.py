"""The model registry: per-backbone defaults of the method.

Each supported CLIP backbone has a :class:`ModelEntry` holding its open_clip architecture and
pretrained tag, the middle block ``M`` whose keys build CRA's attention, the default sliding
window and the logit scale. Entries are looked up by key (``"ARCH/TAG"``, as open_clip spells
them) or by a friendly alias (``"clip-b16"``), case-insensitively.

Lookup order of :func:`get_entry`:

1. a registry key or alias (the paper's backbones, the domain CLIPs of
   :mod:`clipseg.models.catalog`, the bundled test model of :mod:`clipseg.models.bundled`,
   anything added with :func:`register_model`);
2. a calibrated profile saved by the user (:mod:`clipseg.models.profiles`);
3. any open_clip ``"ARCH/TAG"`` or bare ``"ARCH"``: an entry is synthesised from the
   architecture's config with ``M = ceil(L / 2)``.
"""
from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import open_clip

from ..errors import InvalidConfigError, UnsupportedModelError

__all__ = ["ModelEntry", "get_entry", "list_models", "register_model", "synthesise_entry",
           "DEFAULT_SHORT_SIDE", "DEFAULT_LOGIT_SCALE", "DOMAINS", "HF_HUB_PREFIX", "aliases_of"]

#: Short side (pixels) images are resized to before windowing (TCL / ClearCLIP protocol).
DEFAULT_SHORT_SIDE = 448
#: Multiplier of cosine logits before the softmax over classes (METHOD.md; ClearCLIP uses 50).
DEFAULT_LOGIT_SCALE = 40.0

_PAPER_FIG3 = "paper Fig. 3 (layer 9 for CLIP-L; 'layers 8-9' for ViT-L)"
_NOT_MEASURED = "default, not measured; calibrate with clipseg calibrate"
_SYNTHESISED = "synthesised: ceil(L/2)"
#: Image domains an entry is meant for; ``clipseg models`` groups by them, in this order.
DOMAINS = ("general", "biomedical", "microscopy", "organisms", "remote sensing", "demo")
#: open_clip's prefix of models whose config and weights live in a Hugging Face repo.
HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class ModelEntry:
    """Defaults of the method for one CLIP backbone.

    Parameters
    ----------
    key : str
        Registry key, ``"ARCH/TAG"`` (or ``"ARCH"`` when there is no pretrained tag).
    arch : str
        open_clip architecture name (``"ViT-B-16"``), as in ``open_clip.list_models()``.
    pretrained : str or None
        open_clip pretrained tag (``"openai"``); None when weights come from ``checkpoint``
        or must be given by the user.
    middle_layer : int
        Block ``M`` (counted from 1) whose keys build CRA's attention.
    middle_layer_source : str
        Where ``middle_layer`` comes from (paper figure, default, calibration), shown to users.
    crop, stride : int
        Sliding-window size and step in pixels of the resized image; ``1 <= stride <= crop``.
    short_side : int
        Short side the image is resized to before windowing; 0 = the image's own size (a model
        trained at one pixel scale, like the bundled demo model).
    logit_scale : float
        Multiplier of cosine logits before the softmax over classes (> 0).
    description : str
        One line for listings.
    checkpoint : str or None
        Path of a local weights file that belongs to this entry (bundled models, profiles).
    domain : str
        One of :data:`DOMAINS`: the images the weights were trained for.
    source : str
        Paper and download page of the weights (empty for open_clip's own tags).
    note : str
        A caveat shown in listings (e.g. the coarse maps of 32-px patches).
    hub_file : tuple of (str, str) or None
        ``(repo_id, filename)`` of a state-dict checkpoint on the Hugging Face Hub for ``arch``;
        fetched into the Hugging Face cache on first use, like open_clip's own weights.
    download : str
        How to get the weights file when no tag, ``hub_file`` or ``hf-hub:`` name gives one; the
        user then passes it as ``checkpoint``.
    requires : tuple of str
        Python packages the model needs beyond the core dependencies (importable names).
    """

    key: str
    arch: str
    pretrained: str | None
    middle_layer: int
    middle_layer_source: str
    crop: int
    stride: int
    short_side: int
    logit_scale: float
    description: str
    checkpoint: str | None = None
    domain: str = "general"
    source: str = ""
    note: str = ""
    hub_file: tuple[str, str] | None = None
    download: str = ""
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("key", "arch", "middle_layer_source", "description"):
            value = getattr(self, name)
            if not isinstance(value, str) or (name != "description" and not value.strip()):
                raise InvalidConfigError(f"ModelEntry.{name}: expected a non-empty string, "
                                         f"got {value!r}")
        for name in ("pretrained", "checkpoint"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidConfigError(f"ModelEntry.{name}: expected a non-empty string or "
                                         f"None, got {value!r}")
        for name, low in (("middle_layer", 1), ("crop", 16), ("stride", 1), ("short_side", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low \
                    or (name == "short_side" and 0 < value < 16):
                raise InvalidConfigError(f"ModelEntry.{name} of {self.key!r}: expected an "
                                         f"integer >= {low}, got {value!r}")
        if self.stride > self.crop:
            raise InvalidConfigError(f"ModelEntry.stride of {self.key!r}: expected at most crop "
                                     f"({self.crop}) so windows cover the image, got {self.stride}")
        scale = self.logit_scale
        if (isinstance(scale, bool) or not isinstance(scale, (int, float))
                or not math.isfinite(scale) or scale <= 0):
            raise InvalidConfigError(f"ModelEntry.logit_scale of {self.key!r}: expected a finite "
                                     f"number > 0, got {scale!r}")
        object.__setattr__(self, "logit_scale", float(scale))
        self._check_origin()

    def _check_origin(self) -> None:
        """Validate the domain and weights-source fields (lists from JSON become tuples)."""
        if self.domain not in DOMAINS:
            raise InvalidConfigError(f"ModelEntry.domain of {self.key!r}: expected one of "
                                     f"{', '.join(DOMAINS)}, got {self.domain!r}")
        for name in ("source", "note", "download"):
            if not isinstance(getattr(self, name), str):
                raise InvalidConfigError(f"ModelEntry.{name} of {self.key!r}: expected a string, "
                                         f"got {getattr(self, name)!r}")
        hub = self.hub_file
        if hub is not None:
            if not isinstance(hub, (tuple, list)) or len(hub) != 2 or not all(
                    isinstance(part, str) and part.strip() for part in hub):
                raise InvalidConfigError(f"ModelEntry.hub_file of {self.key!r}: expected "
                                         f"(repo_id, filename) strings or None, got {hub!r}")
            object.__setattr__(self, "hub_file", (hub[0], hub[1]))
        req = self.requires
        if not isinstance(req, (tuple, list)) or not all(isinstance(r, str) and r for r in req):
            raise InvalidConfigError(f"ModelEntry.requires of {self.key!r}: expected package "
                                     f"names, got {req!r}")
        object.__setattr__(self, "requires", tuple(req))

    @property
    def is_hf_hub(self) -> bool:
        """Whether open_clip loads ``arch`` (config and weights) from a Hugging Face repo."""
        return self.arch.startswith(HF_HUB_PREFIX)


def _paper_entry(arch: str, tag: str, family: str) -> ModelEntry:
    large = "-L-14" in arch
    return ModelEntry(
        key=f"{arch}/{tag}", arch=arch, pretrained=tag,
        middle_layer=9 if large else 6,
        middle_layer_source=_PAPER_FIG3 if large else _NOT_MEASURED,
        # /14 models use the same 224/112 window as /16 (TCL protocol): a 16x16 patch grid.
        crop=224, stride=112, short_side=DEFAULT_SHORT_SIDE, logit_scale=DEFAULT_LOGIT_SCALE,
        description=f"{family} {'ViT-L/14' if large else 'ViT-B/16'} ({tag})")


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # lower-case alias -> key

for _arch, _tag, _family, _aliases in (
    ("ViT-B-16", "openai", "CLIP", ("clip-b16", "clip-b/16")),
    ("ViT-L-14", "openai", "CLIP", ("clip-l14", "clip-l/14")),
    ("ViT-B-16", "laion400m_e32", "OpenCLIP LAION-400M", ("openclip-b16", "openclip-b/16")),
    ("ViT-L-14", "laion400m_e32", "OpenCLIP LAION-400M", ("openclip-l14", "openclip-l/14")),
    ("ViT-B-16-quickgelu", "metaclip_400m", "MetaCLIP 400M",
     ("metaclip-b16", "metaclip-b16-400m")),
    ("ViT-L-14-quickgelu", "metaclip_400m", "MetaCLIP 400M",
     ("metaclip-l14", "metaclip-l14-400m")),
    ("ViT-B-16-quickgelu", "metaclip_fullcc", "MetaCLIP 2.5B (fullcc)",
     ("metaclip-b16-fullcc",)),
    ("ViT-L-14-quickgelu", "metaclip_fullcc", "MetaCLIP 2.5B (fullcc)",
     ("metaclip-l14-fullcc",)),
):
    _entry = _paper_entry(_arch, _tag, _family)
    _REGISTRY[_entry.key] = _entry
    for _alias in _aliases:
        _ALIASES[_alias] = _entry.key


def optional_module(name: str) -> ModuleType | None:
    """Import ``clipseg.models.<name>`` if that module exists; errors inside it propagate."""
    full = f"{__package__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name == full:
            return None
        raise


def _bundled_entries() -> list[ModelEntry]:
    module = optional_module("bundled")
    return list(module.BUNDLED_ENTRIES) if module is not None else []


_catalog_done: list[bool] = []


def _ensure_catalog() -> None:
    """Add the domain CLIPs of :mod:`.catalog` to the registry once (it imports this module)."""
    if _catalog_done:
        return
    _catalog_done.append(True)
    module = optional_module("catalog")
    if module is None:
        return
    for entry in module.CATALOG_ENTRIES:
        _REGISTRY.setdefault(entry.key, entry)
    for alias, key in module.CATALOG_ALIASES.items():
        _ALIASES.setdefault(alias, key)


def _all_entries() -> dict[str, ModelEntry]:
    """Registered entries (paper backbones, domain CLIPs), then bundled ones."""
    _ensure_catalog()
    entries = dict(_REGISTRY)
    for entry in _bundled_entries():
        entries.setdefault(entry.key, entry)
    return entries


def register_model(entry: ModelEntry, *, aliases: tuple[str, ...] = (),
                   overwrite: bool = False) -> None:
    """Add ``entry`` (and optional aliases) to the registry of this process.

    Raises
    ------
    InvalidConfigError
        ``entry`` is not a :class:`ModelEntry`, or its key/alias is taken and ``overwrite`` is
        False.
    """
    if not isinstance(entry, ModelEntry):
        raise InvalidConfigError(f"register_model: expected a ModelEntry, got {entry!r}")
    existing = _find_key(entry.key)
    if existing is not None and not overwrite:
        raise InvalidConfigError(f"register_model: the name {entry.key!r} is already registered "
                                 f"(as {existing!r}); pass overwrite=True to replace it")
    for alias in aliases:
        if not isinstance(alias, str) or not alias.strip():
            raise InvalidConfigError(f"register_model: expected non-empty alias strings, got "
                                     f"{alias!r}")
        taken = _find_key(alias)
        if taken is not None and taken != entry.key and not overwrite:
            raise InvalidConfigError(f"register_model: alias {alias!r} already names {taken!r}")
    _REGISTRY[entry.key] = entry
    for alias in aliases:
        _ALIASES[alias.strip().lower()] = entry.key


def _find_key(name: str) -> str | None:
    """Registry key for a key or alias (case-insensitive), or None."""
    _ensure_catalog()
    low = name.strip().lower()
    for key in _all_entries():
        if key.lower() == low:
            return key
    return _ALIASES.get(low)


def aliases_of(key: str) -> list[str]:
    """The aliases that name registry key ``key`` (lower-case, sorted)."""
    _ensure_catalog()
    return sorted(alias for alias, target in _ALIASES.items() if target == key)


def _profiles() -> ModuleType | None:
    return optional_module("profiles")


def list_models(*, include_profiles: bool = True) -> list[str]:
    """Registry keys (paper backbones, bundled models, registered ones), then saved profiles.

    Any other open_clip ``"ARCH/TAG"`` (see ``open_clip.list_pretrained()``) is accepted by
    :func:`get_entry` too, with synthesised defaults.
    """
    names = list(_all_entries())
    if include_profiles:
        module = _profiles()
        if module is not None:
            names += [p for p in module.list_profiles() if p not in names]
    return names


def _match_arch(arch: str) -> str | None:
    """open_clip architecture name matching ``arch`` case-insensitively, or None."""
    known = open_clip.list_models()
    if arch in known:
        return arch
    low = arch.lower()
    for name in known:
        if name.lower() == low:
            return name
    return None


def synthesise_entry(arch: str, pretrained: str | None = None, *, key: str | None = None,
                     layers: int | None = None, patch_size: int | None = None,
                     image_size: int | None = None) -> ModelEntry:
    """Entry for an open_clip ViT without a registry entry.

    ``M = ceil(L / 2)``, ``crop`` = the native image size, ``stride = crop // 2``, default
    short side and logit scale. ``layers``/``patch_size``/``image_size`` are read from
    ``open_clip.get_model_config(arch)`` unless given (e.g. read off a built model).

    Raises
    ------
    UnsupportedModelError
        The architecture's vision tower is not a plain open_clip ViT (ResNet, timm tower).
    """
    if layers is None or image_size is None:
        cfg = open_clip.get_model_config(arch) or {}
        vision = cfg.get("vision_cfg", {})
        if "timm_model_name" in vision or not isinstance(vision.get("layers"), int):
            raise UnsupportedModelError(
                f"{arch!r}: expected an open_clip VisionTransformer (integer vision layers) to "
                f"synthesise defaults from, got a vision config {vision!r}. ResNet and ConvNeXt "
                "towers cannot be read; a timm ViT tower can: use its registry entry (clipseg "
                "models, e.g. 'biomedclip') or build the model and pass it to wrap_model()")
        layers = vision["layers"] if layers is None else layers
        patch_size = vision.get("patch_size", 16) if patch_size is None else patch_size
        image_size = vision.get("image_size", 224) if image_size is None else image_size
    if isinstance(image_size, (tuple, list)):
        image_size = int(min(image_size))
    crop = int(image_size)
    key = key or (f"{arch}/{pretrained}" if pretrained else arch)
    return ModelEntry(
        key=key, arch=arch, pretrained=pretrained, middle_layer=default_middle_layer(layers),
        middle_layer_source=_SYNTHESISED, crop=crop, stride=max(1, crop // 2),
        short_side=DEFAULT_SHORT_SIDE, logit_scale=DEFAULT_LOGIT_SCALE,
        description=f"open_clip {arch} ({pretrained or 'no pretrained tag'}), "
                    f"{layers} blocks, patch {patch_size}; defaults synthesised")


def _unknown(name: str) -> InvalidConfigError:
    candidates = list(dict.fromkeys(list_models() + list(_ALIASES) + [
        f"{a}/{t}" for a, t in open_clip.list_pretrained()]))
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=5,
                                          cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
    return InvalidConfigError(
        f"model {name!r}: expected a registry key or alias, a saved profile, or an open_clip "
        f"'ARCH/TAG' / 'ARCH'; got an unknown name{hint} See "
        "clipseg.models.list_models() for the registry and open_clip.list_pretrained() for "
        "every open_clip ARCH/TAG")


def get_entry(name: str) -> ModelEntry:
    """Look up the :class:`ModelEntry` for ``name`` (see the module docstring for the order).

    Raises
    ------
    InvalidConfigError
        ``name`` is not a string, or nothing matches it (close matches are listed), or the tag
        of an ``"ARCH/TAG"`` is not one open_clip knows for that architecture.
    UnsupportedModelError
        The architecture exists but is not a plain open_clip ViT.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidConfigError(f"model: expected a non-empty model name, got {name!r}")
    name = name.strip()
    key = _find_key(name)
    if key is not None:
        return _all_entries()[key]
    module = _profiles()
    if module is not None:
        profile = module.get_profile(name)
        if profile is not None:
            return profile
    if name.lower().startswith(HF_HUB_PREFIX):
        hub = [k for k in list_models(include_profiles=False) if k.startswith(HF_HUB_PREFIX)]
        raise InvalidConfigError(
            f"model {name!r}: expected one of the registered hf-hub models ({', '.join(hub)}), "
            "got another; build it with open_clip.create_model(NAME) and pass the model to "
            "wrap_model(), or register an entry with register_model()")
    arch_name, _, tag = name.partition("/")
    arch = _match_arch(arch_name.strip())
    if arch is None:
        raise _unknown(name)
    tag = tag.strip() or None
    if tag is not None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        match = next((t for t in tags if t.lower() == tag.lower()), None)
        if match is None:
            raise InvalidConfigError(
                f"model {name!r}: expected one of the pretrained tags open_clip knows for "
                f"{arch} ({', '.join(tags) or 'none'}), got {tag!r}")
        tag = match
        key = _find_key(f"{arch}/{tag}")
        if key is not None:
            return _all_entries()[key]
    return synthesise_entry(arch, tag)



def default_middle_layer(num_layers: int) -> int:
    """``ceil(L / 2)``: the middle layer of a model that neither the user nor a registry entry
    gives one for."""
    return max(1, math.ceil(num_layers / 2))


def entry_for(config: Any) -> ModelEntry:
    """The entry of a :class:`~clipseg.config.ModelConfig`: its model's, with the pretrained tag
    override applied (the same entry :func:`clipseg.models.load_model` loads)."""
    entry = get_entry(config.model)
    if config.pretrained is not None and config.pretrained != entry.pretrained:
        entry = get_entry(f"{entry.arch}/{config.pretrained}")
    return entry
