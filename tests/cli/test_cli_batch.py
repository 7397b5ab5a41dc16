"""``clipseg batch``: recursion, corrupt input, resume after an interrupted run."""
from __future__ import annotations

import os

import numpy as np
import pytest

import clipseg.apps.jobs as jobs
import clipseg.apps.run as run
from clipseg.apps.cli import EXIT_FAILED, EXIT_OK, main
from clipseg.formats import io
from tests.cli.conftest import save, scene

CLASSES = "red, green, blue"


def _tree(root):
    save(root / "a.png", scene(0))
    save(root / "sub" / "b.jpg", scene(1, (36, 30)))
    save(root / "sub" / "deeper" / "c.bmp", scene(2, (30, 44)))
    save(root / "sub" / "c.png", scene(3))
    save(root / "sub" / "c.webp", scene(4))      # same stem as c.png: outputs c_png / c_webp
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "sub" / "broken.tif").write_bytes(b"II*\x00" + b"\xff" * 20)
    return root


def _run(src, out, model_args, *extra):
    return main(["batch", str(src), "--classes", CLASSES, "-o", str(out), *model_args, *extra])


def test_batch_is_recursive_reports_corrupt_files_and_exits_1(tmp_path, model_args, capsys):
    src = _tree(tmp_path / "in")
    out = tmp_path / "in" / "labels"   # inside the input folder: must not be re-ingested
    assert _run(src, out, model_args, "--allow-output-in-input") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "7 images: 5 segmented, 0 skipped" in err and "2 failed" in err
    assert "FAILED sub/broken.png" in err and "FAILED sub/broken.tif" in err
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.clipseg.json"))
    assert done == ["a.clipseg.json", "sub/b.clipseg.json", "sub/c_png.clipseg.json",
                    "sub/c_webp.clipseg.json", "sub/deeper/c.clipseg.json"]
    assert "broken.png" in (out / "clipseg-failures.log").read_text()
    assert f"details (tracebacks) of the failures: {out / 'clipseg-failures.log'}" in err
    labels, meta = io.read_labels(out / "sub" / "b")
    assert labels.shape == (36, 30) and meta["image"]["name"] == "sub/b.jpg"
    # a second run over the same folder sees the same 7 images, skips the 5 done
    assert _run(src, out, model_args, "--allow-output-in-input") == EXIT_FAILED
    assert "5 skipped" in capsys.readouterr().err


def test_no_recursive_and_all_good_exits_0(tmp_path, model_args, capsys):
    src = tmp_path / "in"
    save(src / "a.png", scene(0))
    save(src / "sub" / "b.png", scene(1))
    assert _run(src, tmp_path / "out", model_args, "--no-recursive") == EXIT_OK
    assert "1 images: 1 segmented" in capsys.readouterr().err


def test_resume_after_a_killed_run(tmp_path, model_args, monkeypatch, capsys):
    src = tmp_path / "in"
    for i in range(4):
        save(src / f"im{i}.png", scene(i))
    out = tmp_path / "out"
    real = run.process_job
    calls = []

    def killed_on_third(job, *args, **kwargs):
        calls.append(job.name)
        if len(calls) == 3:
            # what a kill mid-image leaves: a temp file, an image without its sidecar
            (out / ".im2.png.x1y2.part").write_bytes(b"half")
            raise KeyboardInterrupt
        return real(job, *args, **kwargs)

    monkeypatch.setattr(run, "process_job", killed_on_third)
    assert _run(src, out, model_args) == 130
    assert sorted(p.name for p in out.glob("*.clipseg.json")) == ["im0.clipseg.json",
                                                                   "im1.clipseg.json"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("im*")}
    monkeypatch.setattr(run, "process_job", real)
    capsys.readouterr()

    assert _run(src, out, model_args) == EXIT_OK
    assert "4 images: 2 segmented, 2 skipped" in capsys.readouterr().err
    for name, stamp in stamps.items():  # finished outputs were not rewritten
        assert (out / name).stat().st_mtime_ns == stamp
    # outputs equal a fresh uninterrupted run
    assert _run(src, tmp_path / "fresh", model_args) == EXIT_OK
    for i in range(4):
        a, _ = io.read_labels(out / f"im{i}")
        b, _ = io.read_labels(tmp_path / "fresh" / f"im{i}")
        np.testing.assert_array_equal(a, b)


def test_resume_redoes_incomplete_or_differently_made_outputs(tmp_path, model_args, capsys):
    src = tmp_path / "in"
    for i in range(3):
        save(src / f"im{i}.png", scene(i))
    out = tmp_path / "out"
    assert _run(src, out, model_args) == EXIT_OK
    (out / "im0.clipseg.json").unlink()     # image written, sidecar missing: incomplete
    os.remove(out / "im1.png")              # sidecar without its image
    capsys.readouterr()
    assert _run(src, out, model_args) == EXIT_OK
    assert "2 segmented, 1 skipped" in capsys.readouterr().err
    # other options or other classes: nothing is skipped
    assert _run(src, out, model_args, "--tau", "4") == EXIT_OK
    assert "3 segmented, 0 skipped" in capsys.readouterr().err
    # options that do not change results (device, batch size) still skip
    assert _run(src, out, model_args, "--tau", "4", "--batch-size", "3") == EXIT_OK
    assert "0 segmented, 3 skipped" in capsys.readouterr().err
    assert _run(src, out, model_args, "--tau", "4", "--no-resume") == EXIT_OK
    assert "3 segmented, 0 skipped" in capsys.readouterr().err


def test_segment_of_a_missing_file_is_reported(tmp_path, model_args, capsys):
    good = save(tmp_path / "a.png", scene(0))
    code = main(["segment", str(good), str(tmp_path / "missing.png"), "--classes", CLASSES,
                 "-o", str(tmp_path / "out"), *model_args])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "FAILED missing.png" in err and "1 segmented" in err


def test_batch_of_a_file_instead_of_a_folder_is_a_usage_error(tmp_path, model_args):
    good = save(tmp_path / "a.png", scene(0))
    assert _run(good, tmp_path / "out", model_args) == 2


@pytest.mark.parametrize("names", [["x/a.png", "y/a.png"], ["a.png", "a.tif"]])
def test_discover_names_never_collide(tmp_path, names):
    files = [save(tmp_path / n, scene(0)) if n.endswith("png") else
             (tmp_path / n).write_bytes(b"") or tmp_path / n for n in names]
    found = jobs.discover(files, tmp_path / "out", recursive=False, walk=False)
    assert len({j.base for j in found}) == len(files)
