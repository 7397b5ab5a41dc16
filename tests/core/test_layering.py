"""The engine stays usable without a display: no Qt, napari or magicgui behind `import clipseg`."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import clipseg

GUI = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6",
       "napari_clipseg")


def test_importing_every_engine_module_pulls_in_no_gui_package():
    modules = sorted(m.name for m in pkgutil.walk_packages(clipseg.__path__, "clipseg.")
                     if not m.name.endswith("__main__"))
    assert "clipseg.pipeline" in modules and "clipseg.apps.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"GUI modules imported by the engine: {proc.stdout}"
