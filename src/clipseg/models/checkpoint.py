"""Reading weights files without running code stored in them.

``.safetensors`` files hold tensors only. ``torch.save`` files are pickles; they are read with
``torch.load(weights_only=True)``, whose restricted unpickler refuses anything that would import
or call code, and TorchScript archives (which store code) are refused before torch sees them.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, UnsafeCheckpointError, describe

__all__ = ["load_checkpoint_safely", "load_state_into"]

_CONVERT_HINT = (
    "If you trust the file, convert it once to safetensors in Python: "
    "`import torch; from safetensors.torch import save_file; "
    "obj = torch.load(PATH, map_location='cpu', weights_only=False)  # runs code from the file; "
    "sd = obj.state_dict() if hasattr(obj, 'state_dict') else obj.get('state_dict', obj); "
    "save_file({k: v.contiguous() for k, v in sd.items()}, 'weights.safetensors')` "
    "and pass the .safetensors file instead.")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def _clean_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError(f"checkpoint {str(path)!r}: expected a state dict (name -> tensor) "
                             f"or {{'state_dict': ...}}, got {describe(obj)}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"checkpoint {str(path)!r}: expected only tensors keyed by name, got "
                             f"{len(bad)} other entries, e.g. {bad[:3]!r}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file without executing any code stored in it.

    ``.safetensors`` files are read with ``safetensors.torch.load_file``; anything else with
    ``torch.load(weights_only=True, map_location="cpu")``. A plain state dict and
    ``{"state_dict": ...}`` are both accepted and a DataParallel ``"module."`` prefix is removed.

    Returns
    -------
    dict of str to torch.Tensor
        CPU tensors, keyed by parameter name.

    Raises
    ------
    UnsafeCheckpointError
        The file needs code to unpickle (custom classes, a TorchScript archive such as OpenAI's
        original ``ViT-B-16.pt``); it is refused and the message says how to convert it.
    ModelLoadError
        Missing or unreadable file, or content that is not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"checkpoint: expected an existing weights file, got {str(path)!r} "
                             "(no such file)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return _clean_state_dict(load_file(str(path), device="cpu"), path)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"checkpoint {str(path)!r}: expected a valid .safetensors file; "
                                 f"reading it failed: {exc}") from exc
    if _is_torchscript(path):
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r}: expected plain weights, got a TorchScript archive (it "
            "stores code, which this loader never runs), e.g. OpenAI's original CLIP .pt file. "
            "For OpenAI weights use the pretrained tag 'openai' instead (open_clip fetches a "
            "weights-only copy), or convert: " + _CONVERT_HINT.replace(
                "torch.load(PATH, map_location='cpu', weights_only=False)",
                "torch.jit.load(PATH, map_location='cpu')"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r}: expected tensors only, got a pickle that needs code to "
            f"load ({first}); such files are refused because unpickling can run arbitrary "
            "code. " + _CONVERT_HINT) from exc
    except (RuntimeError, KeyError, EOFError, OSError, ValueError) as exc:
        raise ModelLoadError(f"checkpoint {str(path)!r}: expected a .safetensors or torch.save "
                             f"weights file; torch.load failed: {type(exc).__name__}: {exc}"
                             ) from exc
    return _clean_state_dict(obj, path)


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` strictly; a mismatch raises ``ModelLoadError`` naming keys.

    The OpenAI layout's non-tensor extras (``input_resolution``, ``context_length``,
    ``vocab_size``) are ignored. Tensors are copied into the model's own dtype and device.
    """
    state = dict(state)
    for extra in ("input_resolution", "context_length", "vocab_size"):  # OpenAI layout
        state.pop(extra, None)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", wrong)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise ModelLoadError(f"checkpoint {source!r} does not fit the architecture: "
                             + "; ".join(parts) + ". Is it for another model? Pass the matching "
                             "model name (e.g. model='ViT-L-14/openai').")
    model.load_state_dict(state, strict=True)
