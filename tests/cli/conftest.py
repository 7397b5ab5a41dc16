"""Fixtures of the CLI tests: a tiny random-weights checkpoint on disk, small images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from tests.tiny_models import TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_clip, tiny_model_name) -> dict[str, Path]:
    """The tiny model's weights as .safetensors and its open_clip config as JSON."""
    folder = tmp_path_factory.mktemp("tiny-model")
    weights = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, str(weights))
    config = folder / f"{tiny_model_name}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return {"weights": weights, "config": config, "name": tiny_model_name}


@pytest.fixture
def model_args(tiny_files) -> list[str]:
    """Flags that load the tiny model through the real checkpoint path, small and on CPU."""
    return ["--model", tiny_files["name"], "--checkpoint", str(tiny_files["weights"]),
            "--model-config", str(tiny_files["config"]), "--device", "cpu",
            "--short-side", "48", "--quiet"]


def scene(seed: int, size: tuple[int, int] = (40, 52)) -> np.ndarray:
    """A uint8 RGB image with a few flat blocks and noise (so classes differ across it)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
    h, w = size
    img[: h // 2, : w // 2] += np.array([180, 20, 20], np.uint8)
    img[h // 2:, w // 3:] += np.array([10, 150, 30], np.uint8)
    return img


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def main_in_fresh_python(argv: list[str], **run_kwargs) -> tuple[str, str]:
    """Run ``clipseg.apps.cli.main(argv)`` in a new interpreter; return its stdout (lines
    ``HEAVY [...]``: which of torch / open_clip / timm got imported, ``RC n``) and stderr."""
    import subprocess
    import sys

    code = ("import sys\nfrom clipseg.apps.cli import main\n"
            f"rc = main({argv!r})\n"
            "print('HEAVY', sorted(m for m in ('torch', 'open_clip', 'timm')"
            " if m in sys.modules))\n"
            "print('RC', rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, **run_kwargs)
    return proc.stdout, proc.stderr
