"""Ctrl-C on a ``--dask-local`` run: one message, exit 130, no traceback from any process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import clipseg
from clipseg.formats import io
from tests.cli.conftest import save, scene

pytest.importorskip("distributed")


def test_ctrl_c_on_a_local_cluster_is_quiet(tmp_path, tiny_files):
    src = tmp_path / "imgs"
    for i in range(12):
        save(src / f"{i:02d}.png", scene(i, (192, 192)))
    out = tmp_path / "out"
    code_root = Path(clipseg.__file__).resolve().parents[1]
    env = dict(os.environ, CLIPSEG_TEXT_CACHE="none", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(code_root), str(code_root.parent)]))
    cmd = [sys.executable, "-m", "clipseg", "batch", str(src), "--classes", "a, b", "-o",
           str(out), "--dask-local", "1", "--model", tiny_files["name"], "--checkpoint",
           str(tiny_files["weights"]), "--model-config", str(tiny_files["config"]),
           "--device", "cpu", "--short-side", "384"]
    # A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the client, the
    # nannies and the worker processes. A new session makes that group ours to signal.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        # wait until the worker has finished an image and is in the middle of the next one
        while b"1/12" not in b"".join(chunks):
            assert proc.poll() is None, b"".join(chunks).decode(errors="replace")
            assert time.monotonic() < deadline, "the cluster never finished an image"
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    err = b"".join(chunks).decode(errors="replace")
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert " - WARNING - " not in err and " - ERROR - " not in err, err  # Dask's log lines
    assert err.count("interrupted; finished outputs are complete") == 1, err
    # what was finished is complete: every sidecar names a label image that exists
    for side in out.rglob("*.clipseg.json"):
        assert io.label_image_path(side, io.read_sidecar(side)).is_file()
