"""Dask scale-out: the same outputs as the serial run; failed and lost work is retried."""
from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pytest

import clipseg.apps.batch as batch
from clipseg.apps.cli import EXIT_FAILED, EXIT_OK, main
from tests.cli.conftest import save, scene

distributed = pytest.importorskip("distributed")

CLASSES = "red; crimson, green, blue"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c:
        yield c


def _inputs(root: Path) -> Path:
    for i in range(4):
        save(root / f"im{i}.png", scene(i))
    save(root / "sub" / "wide.png", scene(9, (40, 110)))   # tiled with --tile-size 48
    (root / "sub" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def _args(src, out, model_args):
    args = list(model_args)
    args[args.index("--short-side") + 1] = "0"
    return ["batch", str(src), "--classes", CLASSES, "-o", str(out), "--tile-size", "48",
            "--scores", *args]


def _same_tree(a: Path, b: Path) -> list[str]:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()
                   and not p.name.endswith(".log"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()
                           and not p.name.endswith(".log"))
    return [n for n in names if not (_same_sidecar(a / n, b / n) if n.endswith(".clipseg.json")
                                     else filecmp.cmp(a / n, b / n, shallow=False))]


def _same_sidecar(a: Path, b: Path) -> bool:
    """Equal but for the time the draft state was recorded (each run stamps its own)."""
    sides = [json.loads(p.read_text()) for p in (a, b)]
    for side in sides:
        assert side["review"]["state"] == "draft"
        side["review"].pop("updated")
    return sides[0] == sides[1]


def test_dask_run_equals_serial_run(tmp_path, model_args, cluster, capsys):
    src = _inputs(tmp_path / "in")
    assert main(_args(src, tmp_path / "serial", model_args)) == EXIT_FAILED
    capsys.readouterr()
    code = main(_args(src, tmp_path / "dask", model_args)
                + ["--dask-scheduler", cluster.scheduler_address])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "6 images: 5 segmented" in err and "FAILED sub/bad.jpg" in err
    assert (tmp_path / "dask" / "sub" / "wide.tif").is_file()       # the tiled one
    assert _same_tree(tmp_path / "serial", tmp_path / "dask") == []  # byte for byte
    # resumed on the cluster: nothing to redo
    main(_args(src, tmp_path / "dask", model_args)
         + ["--dask-scheduler", cluster.scheduler_address])
    assert "5 skipped" in capsys.readouterr().err


def test_transient_failures_are_retried(tmp_path, model_args, cluster, monkeypatch, capsys):
    src = tmp_path / "in"
    for i in range(3):
        save(src / f"im{i}.png", scene(i))
    real = batch._segment_and_write
    failed: set[str] = set()

    def flaky(job, *args, **kwargs):  # in-process workers share this module
        if job.name not in failed:
            failed.add(job.name)
            raise OSError(f"transient I/O error on {job.name}")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(batch, "_segment_and_write", flaky)
    code = main(_args(src, tmp_path / "out", model_args)
                + ["--dask-scheduler", cluster.scheduler_address, "--retries", "1",
                   "--tile-size", "0"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert failed == {"im0.png", "im1.png", "im2.png"}
    assert len(list((tmp_path / "out").glob("*.clipseg.json"))) == 3


class _KillOnce(distributed.WorkerPlugin):
    """Kill the worker process the first time it starts segmenting an image."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish == "executing" and name.startswith("clipseg-image-") \
                and not os.path.exists(self.marker):
            Path(self.marker).write_text(name)
            os._exit(1)


@pytest.mark.slow
def test_a_worker_dying_mid_run_loses_nothing(tmp_path, model_args, capsys):
    src = tmp_path / "in"
    for i in range(4):
        save(src / f"im{i}.png", scene(i, (30, 40)))
    marker = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as procs, \
            distributed.Client(procs) as client:
        client.register_plugin(_KillOnce(str(marker)))
        code = main(_args(src, tmp_path / "out", model_args)
                    + ["--dask-scheduler", procs.scheduler_address])
    assert marker.exists()  # a worker really died
    assert code == EXIT_OK, capsys.readouterr().err
    assert main(_args(src, tmp_path / "serial", model_args)) == EXIT_OK
    assert _same_tree(tmp_path / "serial", tmp_path / "out") == []
    assert not list((tmp_path / "out").glob(".*.part"))


@pytest.mark.slow
def test_dask_local_starts_its_own_cluster(tmp_path, model_args):
    src = tmp_path / "in"
    for i in range(3):
        save(src / f"im{i}.png", scene(i, (30, 40)))
    assert main(_args(src, tmp_path / "local", model_args) + ["--dask-local", "2"]) == EXIT_OK
    assert main(_args(src, tmp_path / "serial", model_args)) == EXIT_OK
    assert _same_tree(tmp_path / "serial", tmp_path / "local") == []
