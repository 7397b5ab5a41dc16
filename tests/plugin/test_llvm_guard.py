"""Opening the plugin inside a running napari (OpenGL context first) must not crash it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from napari_clipseg._llvm_guard import llvm_clash_risk, mapped_libraries


def test_risk_only_with_mesa_llvm_and_triton_not_yet_imported():
    mesa = ["/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1", "/usr/lib/libGL.so.1"]
    assert llvm_clash_risk(mesa, ["sys", "numpy"]) == mesa[0]
    assert llvm_clash_risk(mesa, ["triton"]) is None
    assert llvm_clash_risk(["/usr/lib/libGL.so.1"], []) is None
    assert llvm_clash_risk(["/venv/site-packages/triton/_C/libLLVM.so"], []) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_mapped_libraries_lists_this_process_objects():
    libs = mapped_libraries()
    assert any("libpython" in p or "python" in p.rsplit("/", 1)[-1] for p in libs)


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (Xvfb)")
def test_plugin_import_after_viewer_does_not_crash_napari():
    # A fresh process: napari creates its GL context first, as for a user who starts napari
    # and then opens the widget; only then does the plugin pull in the engine.
    code = textwrap.dedent("""
        import napari
        viewer = napari.Viewer(show=True)
        import napari_clipseg.widget  # imports the engine (torch, open_clip, torchvision)
        import open_clip
        print("ok", flush=True)
        viewer.close()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "ok" in proc.stdout
