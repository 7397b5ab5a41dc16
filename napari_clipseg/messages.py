"""Messages shown in the widget, in the words of someone using napari.

The engine's own messages address programmers (they may name ``ModelConfig(...)`` or CLI
flags); the CLI and the API keep them. :func:`for_gui` turns the ones a widget user can meet
into instructions about the widget's own controls.
"""
from __future__ import annotations

import re

from clipseg.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError

#: Fragments that read as code to a napari user: backticks, calls with arguments, key=value.
CODE_LIKE = re.compile(r"`|\b[A-Za-z_]\w*\([^)]*=|\b[a-z_]+=['\"\w]|--[a-z]")


def weights_missing(model: str, reason: str) -> str:
    """The model's weights are not on this computer and cannot be downloaded now."""
    return (f"The weights of the model '{model}' are not on this computer, and they cannot be "
            f"downloaded now: {reason}. To get them: connect this computer to the internet "
            "once and press Run (they are downloaded and kept for next time); or copy them "
            "from a computer that has them (the Hugging Face cache folder, "
            "~/.cache/huggingface); or choose a local weights file in 'checkpoint'. Meanwhile "
            "the bundled 'clipseg-demo-tiny' works offline, but it is a toy that knows only the "
            "synthetic shapes sample.")


def for_gui(exc: BaseException, model: str = "") -> str:
    """The message for ``exc`` to show in the widget (no code, no command-line flags)."""
    text = str(exc)
    if isinstance(exc, UnsafeCheckpointError):
        return ("The chosen weights file contains program code (a pickle or TorchScript "
                "file); napari-clipseg never runs code from a weights file. Use a .safetensors "
                "copy of the weights (docs/install.md says how to convert one), or clear "
                "'checkpoint' to use the model's own weights.")
    if isinstance(exc, ModelLoadError):
        if "does not fit the architecture" in text:
            return (f"The chosen weights file does not belong to the model '{model}'. Pick the "
                    "model these weights were trained as in 'model', or choose another file.")
        if "not in the cache" in text or "could not be downloaded" in text:
            return weights_missing(model, "the download failed")
        if "checkpoint" in text and not CODE_LIKE.search(text):
            return text
        if CODE_LIKE.search(text):
            return (f"The model '{model}' could not be loaded: its weights are missing or do "
                    "not fit. Choose another model, or a weights file in 'checkpoint'.")
        return text
    if isinstance(exc, UnsupportedModelError):
        return (f"The model '{model}' is not a CLIP with a vision transformer that "
                "napari-clipseg can read; choose another model.")
    if CODE_LIKE.search(text):
        return _plain(text)
    return text


def _plain(text: str) -> str:
    """Drop the sentences of ``text`` that read as code (keeps the rest)."""
    sentences = re.split(r"(?<=[.;])\s+", text)
    kept = [s for s in sentences if not CODE_LIKE.search(s)]
    return " ".join(kept) if kept else "The run failed; check the settings above and try again."
