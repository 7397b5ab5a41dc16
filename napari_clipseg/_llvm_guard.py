"""Keep triton out of a napari process whose OpenGL runs on Mesa's LLVM.

Mesa's software and AMD OpenGL drivers (llvmpipe, radeonsi) load ``libLLVM``; the triton wheel
that comes with CUDA builds of torch carries its own LLVM. Importing triton into a process that
already has Mesa's LLVM mapped crashes it with a segmentation fault (two LLVMs' global
constructors and symbols collide). torchvision, which open_clip imports, asks torch whether
triton is installed, and that check imports it. In napari the OpenGL context exists before any
plugin code runs, so opening this plugin would take napari down.

The engine never uses triton (it serves ``torch.compile``). So, in exactly that situation, this
module marks triton as unavailable for the process (``sys.modules["triton"] = None``, the
documented way to make an import fail) before the plugin imports the engine, and logs why.
Processes without Mesa's LLVM, or that imported triton already, are left alone.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

logger = logging.getLogger(__name__)


def mapped_libraries(maps_path: str = "/proc/self/maps") -> list[str]:
    """Paths of the shared objects mapped into this process (Linux; empty elsewhere)."""
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as fh:
            return sorted({line.split()[-1] for line in fh if "/" in line})
    except OSError:
        return []


def llvm_clash_risk(libraries: Iterable[str], loaded_modules: Iterable[str]) -> str | None:
    """The mapped libLLVM that makes importing triton crash, or None when there is no risk."""
    if "triton" in set(loaded_modules):
        return None  # triton is in already: nothing left to protect against
    for path in libraries:
        name = path.rsplit("/", 1)[-1]
        if name.startswith("libLLVM") and "/triton/" not in path:
            return path
    return None


def guard() -> bool:
    """Block triton's import when Mesa's LLVM is loaded; True when it did so."""
    if not sys.platform.startswith("linux") or sys.modules.get("triton", 0) is None:
        return False
    culprit = llvm_clash_risk(mapped_libraries(), sys.modules)
    if culprit is None:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    logger.info(
        "napari-clipseg: %s is loaded (Mesa OpenGL); importing triton now would crash napari, "
        "so triton is disabled in this process. Segmentation does not need it; only "
        "torch.compile does.", culprit)
    return True
