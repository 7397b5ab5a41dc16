"""open_clip architecture configs given as JSON files (``--model-config``).

The only place outside :mod:`clipseg.models.loading` that tells open_clip about architectures.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidConfigError

__all__ = ["register_model_configs"]


def register_model_configs(paths: Sequence[Path]) -> list[str]:
    """Register open_clip architecture JSON files; returns their names (file stems)."""
    import open_clip

    names = []
    for path in paths:
        path = Path(path)
        if not path.is_file() or path.suffix.lower() != ".json":
            raise InvalidConfigError(f"--model-config: expected an existing .json file, got "
                                     f"{str(path)!r}")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidConfigError(f"--model-config {path}: not readable JSON: {exc}") from exc
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise InvalidConfigError(f"--model-config {path}: expected an open_clip config with "
                                     f"embed_dim, vision_cfg and text_cfg, got keys "
                                     f"{sorted(cfg) if isinstance(cfg, dict) else type(cfg)}")
        existing = open_clip.get_model_config(path.stem)
        if existing is None:
            open_clip.add_model_config(path)
        elif existing != cfg:
            raise InvalidConfigError(f"--model-config {path}: the name {path.stem!r} already "
                                     "names a different open_clip architecture; rename the file")
        names.append(path.stem)
    return names
