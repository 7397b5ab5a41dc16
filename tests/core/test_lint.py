"""The code base is clean under the project's own ruff configuration (pinned in `testing`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it is part of the testing extra "
                    "(pip install -e '.[testing]')")
    return [found]


def test_ruff_check_is_clean():
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format=concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
