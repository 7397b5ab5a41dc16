"""The demo CLIP that ships inside the package (trained here on synthetic scenes).

``clipseg-demo-tiny`` is a 1.4 M-parameter open_clip ViT (64 px input, patch 8, 6 blocks of
width 128; a 2-block text tower of width 64) trained for a few minutes on CPU by
``scripts/train_tiny_clip.py`` on the coloured-shape scenes of :mod:`clipseg.apps.synthetic`.
It lets
a fresh machine run ``clipseg demo`` and the end-to-end tests offline with a model that has
learned something. It knows 15 concepts (12 coloured shapes, 3 grey textures) and nothing about
real images.

Shipped files (``clipseg/weights/``):

- ``clipseg-demo-tiny.json``: the open_clip architecture config. Its text tower uses a cut-down
  CLIP BPE vocabulary (``text_cfg.tokenizer_kwargs.bpe_path``, relative to the JSON's folder),
  so the token embedding has 727 rows instead of 49408.
- ``clipseg-demo-tiny-bpe.txt.gz``: those BPE merges (a subset of CLIP's, in CLIP's order, so
  prompts about the known concepts tokenise into the same pieces as with CLIP's tokenizer).
- ``clipseg-demo-tiny.safetensors``: the full state dict in fp16, loaded like any user
  checkpoint by :func:`clipseg.models.loading.load_model` through the registry entry below.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip

from ..errors import InvalidConfigError, ModelLoadError
from .registry import ModelEntry

#: Folder holding the shipped architecture config, BPE merges and weights.
WEIGHTS_DIR: Path = Path(__file__).resolve().parent.parent / "weights"
#: open_clip architecture name (and registry key) of the demo model.
BUNDLED_ARCH: str = "clipseg-demo-tiny"
BUNDLED_CONFIG_PATH: Path = WEIGHTS_DIR / f"{BUNDLED_ARCH}.json"

_WEIGHT_FILES: dict[str, Path] = {BUNDLED_ARCH: WEIGHTS_DIR / f"{BUNDLED_ARCH}.safetensors"}
_CONFIG_FILES: dict[str, Path] = {BUNDLED_ARCH: BUNDLED_CONFIG_PATH}

BUNDLED_ENTRIES: list[ModelEntry] = [
    ModelEntry(
        key=BUNDLED_ARCH,
        arch=BUNDLED_ARCH,
        pretrained=None,
        middle_layer=3,
        middle_layer_source="ceil(L/2) default for this 6-block toy model (see docs/demo-model.md)",
        crop=64,
        stride=32,
        short_side=0,  # scenes are drawn at the scale it was trained at: no resize
        logit_scale=40.0,
        description=("Toy CLIP shipped with clipseg, trained here on synthetic coloured shapes "
                     "(scripts/train_tiny_clip.py); for the offline demo and tests only, says "
                     "nothing about real images"),
        checkpoint=str(_WEIGHT_FILES[BUNDLED_ARCH]),
        domain="demo",
    ),
]

_registered: dict[str, Path] = {}


def register_bundled_configs() -> None:
    """Register the shipped architecture configs with open_clip (idempotent).

    The shipped JSON names its BPE file relative to its own folder; open_clip's tokenizer needs
    a path it can open from any working directory, so a copy of the config with that path made
    absolute is registered (through the public ``open_clip.add_model_config``).

    Raises
    ------
    ModelLoadError
        When a shipped config or its BPE file is missing (a broken installation).
    """
    for arch, path in _CONFIG_FILES.items():
        if arch in _registered and arch in open_clip.list_models():
            continue
        if not path.is_file():
            raise ModelLoadError(f"bundled model {arch!r}: expected its architecture config at "
                                 f"{path}, found no file; reinstall napari-clipseg")
        config = json.loads(path.read_text())
        kwargs = config.get("text_cfg", {}).get("tokenizer_kwargs", {})
        if "bpe_path" in kwargs:
            bpe = (path.parent / kwargs["bpe_path"]).resolve()
            if not bpe.is_file():
                raise ModelLoadError(f"bundled model {arch!r}: expected its BPE vocabulary at "
                                     f"{bpe}, found no file; reinstall napari-clipseg")
            kwargs["bpe_path"] = str(bpe)
        folder = Path(tempfile.mkdtemp(prefix="clipseg-bundled-"))
        resolved = folder / f"{arch}.json"
        resolved.write_text(json.dumps(config))
        open_clip.add_model_config(resolved)
        _registered[arch] = resolved


def bundled_checkpoint(key: str) -> Path:
    """Path of the shipped weights file of bundled model ``key``.

    Raises
    ------
    InvalidConfigError
        ``key`` is not a bundled model.
    ModelLoadError
        The weights file is missing from the installation.
    """
    if key not in _WEIGHT_FILES:
        raise InvalidConfigError(f"bundled model: expected one of {', '.join(_WEIGHT_FILES)}, "
                                 f"got {key!r}")
    path = _WEIGHT_FILES[key]
    if not path.is_file():
        raise ModelLoadError(f"bundled model {key!r}: expected its weights at {path}, found no "
                             f"file; reinstall napari-clipseg or retrain with "
                             f"scripts/train_tiny_clip.py")
    return path
