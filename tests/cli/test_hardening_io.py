"""Issue 11, the I/O items: an input is never replaced, outputs are readable per the umask,
I/O errors end in a summary line (never a traceback), symlink loops and leftover temp files.

Every CLI case asserts the exit code, the message, that stderr holds no traceback and that the
input image is byte for byte what it was. Disk-full and read-only cases run on a real small
tmpfs when the tests run as root and ``mount`` works (skipped with the reason otherwise), and
on a simulated error from a patched writer everywhere.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from clipseg import atomic
from clipseg.apps import jobs, run
from clipseg.apps.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from clipseg.formats import coco, io
from tests.cli.conftest import save, scene

CLASSES = "red, green, sky"


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    save(folder / "good.png", scene(1))
    save(folder / "sub" / "b.png", scene(2))
    return folder


# --------------------------------------------------------------------------------------------
# 1 and 10: the output-path policy
# --------------------------------------------------------------------------------------------
def test_segment_into_the_input_folder_is_refused_and_the_input_kept(inputs, model_args,
                                                                     capsys):
    before = _tree(inputs)
    code, err = _run(capsys, "segment", inputs / "good.png", "--classes", "a, b", "-o", inputs,
                     *model_args)
    assert code == EXIT_USAGE
    assert f"-o {inputs}" in err and "an input folder itself" in err
    assert "--allow-output-in-input" in err
    assert _tree(inputs) == before          # no label over good.png, no coco.json


def test_allowing_the_input_folder_still_never_replaces_an_input(inputs, model_args, capsys):
    before = _tree(inputs)
    code, err = _run(capsys, "segment", inputs / "good.png", "--classes", "a, b", "-o", inputs,
                     "--allow-output-in-input", *model_args)
    assert code == EXIT_USAGE
    assert "its result good.png would replace the input image" in err
    assert _tree(inputs) == before


def test_a_tiff_input_is_not_deleted_by_rewriting_its_result(tmp_path, model_args, capsys):
    import tifffile

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", scene(3))
    before = _tree(folder)
    # result a.png would be written, and a.tif (another label format of result "a") removed
    code, err = _run(capsys, "segment", folder / "a.tif", "--classes", CLASSES, "-o", folder,
                     "--allow-output-in-input", *model_args)
    assert code == EXIT_USAGE and "would replace the input image" in err and "a.tif" in err
    assert _tree(folder) == before


def test_allowed_output_next_to_the_inputs_never_takes_outputs_as_inputs(tmp_path, model_args,
                                                                         capsys):
    folder = tmp_path / "photos"
    save(folder / "a.jpg", scene(4))
    before = _tree(folder)
    args = ["--classes", CLASSES, "-o", folder, "--allow-output-in-input", *model_args]
    code, err = _run(capsys, "batch", folder, *args)
    assert code == EXIT_OK, err
    assert "1 images: 1 segmented" in err
    assert (folder / "a.png").is_file() and (folder / "a.clipseg.json").is_file()
    assert (folder / "a.jpg").read_bytes() == before["a.jpg"]
    # the second run finds the draft a.png (its sidecar names it) and does not segment it
    code, err = _run(capsys, "batch", folder, *args)
    assert code == EXIT_OK and "1 images: 0 segmented, 1 skipped" in err


def test_a_file_that_is_not_a_clipseg_output_is_never_replaced(tmp_path, model_args, capsys):
    folder = tmp_path / "photos"
    save(folder / "a.jpg", scene(4))
    save(folder / "a.png", scene(5))      # the user's own picture, not given as input
    before = _tree(folder)
    code, err = _run(capsys, "segment", folder / "a.jpg", "--classes", CLASSES, "-o", folder,
                     "--allow-output-in-input", *model_args)
    assert code == EXIT_USAGE
    assert f"would replace {folder / 'a.png'}, which is not a clipseg output" in err
    assert _tree(folder) == before


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_batch_output_overlapping_the_input_tree_is_refused(inputs, model_args, capsys, where):
    src, out = {"same": (inputs, inputs), "inside": (inputs, inputs / "out"),
                "contains": (inputs / "sub", inputs)}[where]
    before = _tree(inputs)
    code, err = _run(capsys, "batch", src, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_USAGE
    expected = {"same": "an input folder itself", "inside": "a folder inside the input tree",
                "contains": "a folder that contains input images"}[where]
    assert f"-o {out}: expected an output folder outside the input tree" in err
    assert expected in err and "0 images" not in err
    assert _tree(inputs) == before and not (inputs / "out").exists()


@pytest.mark.parametrize("command", ["segment", "batch"])
def test_output_an_existing_file_is_refused(inputs, tmp_path, model_args, capsys, command):
    target = save(tmp_path / "labels.png", scene(7))
    before = target.read_bytes()
    src = inputs / "good.png" if command == "segment" else inputs
    code, err = _run(capsys, command, src, "--classes", CLASSES, "-o", target, *model_args)
    assert code == EXIT_USAGE
    assert f"-o {target}: expected an output folder, got an existing file" in err
    assert target.read_bytes() == before
    code, err = _run(capsys, command, src, "--classes", CLASSES, "-o", target / "x",
                     *model_args)
    assert code == EXIT_USAGE and f"but {target} is an existing file" in err


def test_coco_path_never_an_input_nor_inside_the_input_tree(inputs, tmp_path, model_args,
                                                            capsys):
    before = _tree(inputs)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", tmp_path / "out",
                     "--coco", inputs / "good.png", *model_args)
    assert code == EXIT_USAGE and f"--coco {inputs / 'good.png'}" in err
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", tmp_path / "out",
                     "--coco", inputs / "run.json", *model_args)
    assert code == EXIT_USAGE and "expected the COCO JSON outside the input tree" in err
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", tmp_path / "out",
                     "--coco", tmp_path, *model_args)
    assert code == EXIT_USAGE and "got a folder" in err
    assert _tree(inputs) == before and not (tmp_path / "out").exists()


def test_two_images_with_one_output_name_are_refused(tmp_path, model_args, capsys):
    folder = tmp_path / "in"
    for name in ("a.png", "a.jpg", "a_png.png"):  # a.png -> a_png.*, like a_png.png
        save(folder / name, scene(len(name)))
    code, err = _run(capsys, "batch", folder, "--classes", CLASSES, "-o", tmp_path / "out",
                     *model_args)
    assert code == EXIT_USAGE
    assert "expected one output name per image, got a_png.png for both" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# 2: every output honours the umask
# --------------------------------------------------------------------------------------------
def test_current_umask_reads_without_changing_it():
    old = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        assert atomic.file_mode() == 0o640
        assert os.umask(0o027) == 0o027  # unchanged by the read
    finally:
        os.umask(old)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_every_output_is_written_with_the_umask_mode(tmp_path, model_args, capsys, umask,
                                                     file_mode, dir_mode):
    save(tmp_path / "in" / "sub" / "a.png", scene(1))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")   # -> clipseg-failures.log
    save(tmp_path / "big" / "big.png", scene(5, (90, 120)))
    native = list(model_args)
    native[native.index("--short-side") + 1] = "0"
    old = os.umask(umask)
    try:
        code, _ = _run(capsys, "batch", tmp_path / "in", "--classes", CLASSES, "-o",
                       tmp_path / "out", "--scores", *model_args)
        assert code == EXIT_FAILED  # broken.png
        code, _ = _run(capsys, "segment", tmp_path / "big" / "big.png", "--classes", CLASSES,
                       "-o", tmp_path / "tiled", "--scores", "--tile-size", "48", *native)
        assert code == EXIT_OK
        labels, meta = io.read_labels(tmp_path / "out" / "sub" / "a")
        edits = np.zeros(labels.shape, bool)
        edits[:3, :3] = True
        io.write_labels(tmp_path / "out" / "sub" / "a", labels, ["red", "green", "sky"],
                        edits=edits)
    finally:
        os.umask(old)
    files = [tmp_path / "out" / p for p in
             ("sub/a.png", "sub/a.clipseg.json", "sub/a.scores.tif", "sub/a.edits.png",
              "coco.json", "clipseg-failures.log")]
    files += [tmp_path / "tiled" / p for p in
              ("big.tif", "big.scores.tif", "big.clipseg.json", "coco.json")]
    assert io.read_sidecar(tmp_path / "tiled" / "big")["image"]["tiled"] is True
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == {k: file_mode for k in modes}
    folders = [tmp_path / "out", tmp_path / "out" / "sub", tmp_path / "tiled"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {dir_mode}


# --------------------------------------------------------------------------------------------
# 4: one error boundary for I/O errors
# --------------------------------------------------------------------------------------------
def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.part")]


def test_simulated_disk_full_in_write_coco_is_a_summary_line(inputs, tmp_path, model_args,
                                                             capsys, monkeypatch):
    out = tmp_path / "out"

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(coco, "write_coco", full)
    before = _tree(inputs)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert (f"ERROR writing the COCO JSON {out / 'coco.json'}: No space left on device "
            "(ENOSPC); free some space") in err
    assert "2 images: 2 segmented" in err and "label images and sidecars written" in err
    for name in ("good", "sub/b"):      # what was written is kept, complete
        labels, _ = io.read_labels(out / name)
        assert labels.shape == scene(1).shape[:2]
    log = (out / "clipseg-failures.log").read_text()
    assert "== run" in log and "ENOSPC" in log
    assert _tree(inputs) == before


def test_simulated_permission_error_on_one_image_fails_that_image(inputs, tmp_path, model_args,
                                                                  capsys, monkeypatch):
    out = tmp_path / "out"
    real = io.write_labels

    def refuse_b(path, *args, **kwargs):
        if Path(path).name == "b":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path) + ".png")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_labels", refuse_b)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert (f"FAILED sub/b.png: PermissionError: {out / 'sub' / 'b.png'}: Permission denied "
            "(EACCES); no permission") in err
    assert (out / "good.png").is_file() and not (out / "sub" / "b.clipseg.json").exists()
    assert "== sub/b.png" in (out / "clipseg-failures.log").read_text()


def test_an_os_error_before_the_images_is_one_line_and_exit_1(inputs, tmp_path, model_args,
                                                              capsys, monkeypatch):
    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(inputs / "sub"))

    monkeypatch.setattr(jobs, "discover", unreadable)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", tmp_path / "out",
                     *model_args)
    assert code == EXIT_FAILED
    assert err.strip().splitlines()[-1].startswith(
        f"clipseg batch: error: {inputs / 'sub'}: Permission denied (EACCES)")


def _mount_tmpfs(folder: Path, size: str) -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the simulated-error tests cover this")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only; unmounted after the test)."""
    folder = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    _mount_tmpfs(folder, "256k")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` (a real ENOSPC for the next write)."""
    with open(folder / "filler", "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_real_disk_full_while_writing_coco(inputs, tmpfs, model_args, capsys, monkeypatch):
    out = tmpfs / "out"
    real = coco.write_coco

    def fill_then_write(path, *args, **kwargs):
        _fill(tmpfs)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(coco, "write_coco", fill_then_write)
    before = _tree(inputs)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert f"ERROR writing the COCO JSON {out / 'coco.json'}" in err and "(ENOSPC)" in err
    assert "ERROR writing the failure log" in err   # the disk is still full
    assert not (out / "coco.json").exists() and _no_temp_files(out)
    for name in ("good", "sub/b"):
        io.read_labels(out / name)     # complete
    assert _tree(inputs) == before


def test_real_disk_full_from_the_start_fails_each_image(inputs, tmpfs, model_args, capsys):
    out = tmpfs / "out"
    out.mkdir()
    _fill(tmpfs)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert "2 failed" in err and err.count("(ENOSPC); free some space") >= 3
    assert not list(out.glob("*.png")) and _no_temp_files(out)


def test_real_read_only_output_folder_stops_before_any_image(inputs, tmpfs, model_args,
                                                             capsys):
    (tmpfs / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    # the folder itself, or its nearest existing parent, is named
    for out, named in ((tmpfs / "out", tmpfs / "out"), (tmpfs / "new" / "out", tmpfs)):
        code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out,
                         *model_args)
        assert code == EXIT_FAILED
        assert err.strip().splitlines()[-1].startswith(
            f"clipseg batch: error: {named}: Read-only file system (EROFS)")
    assert [p.name for p in tmpfs.iterdir()] == ["out"]


def test_real_read_only_mid_run_keeps_the_labels(inputs, tmpfs, model_args, capsys,
                                                 monkeypatch):
    out = tmpfs / "out"
    real = run.write_run_coco

    def remount_then_write(*args, **kwargs):
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "write_run_coco", remount_then_write)
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert "ERROR writing the COCO JSON" in err and "(EROFS)" in err
    assert "ERROR writing the failure log" in err
    for name in ("good", "sub/b"):
        io.read_labels(out / name)


# --------------------------------------------------------------------------------------------
# 5: a symbolic link loop
# --------------------------------------------------------------------------------------------
def test_symlink_loop_given_to_segment_fails_as_its_own_image(inputs, tmp_path, model_args,
                                                              capsys):
    loop = inputs / "loop.png"
    loop.symlink_to(loop.name)
    before = _tree(inputs)
    out = tmp_path / "out"
    code, err = _run(capsys, "segment", loop, inputs / "good.png", "--classes", CLASSES,
                     "-o", out, *model_args)
    assert code == EXIT_FAILED
    assert (f"FAILED loop.png: InvalidInputError: {loop}: expected an image file, got a "
            "symbolic link that loops or points to nothing ('loop.png'); fix or remove the "
            "link") in err
    assert (out / "good.png").is_file()
    # walking a folder with a loop in it: the loop is not an image, the rest runs
    code, err = _run(capsys, "batch", inputs, "--classes", CLASSES, "-o", tmp_path / "out2",
                     *model_args)
    assert code == EXIT_OK and "2 images: 2 segmented" in err
    assert _tree(inputs) == before


def test_symlink_loop_as_output_folder_is_one_line(inputs, tmp_path, model_args, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    code, err = _run(capsys, "segment", inputs / "good.png", "--classes", CLASSES, "-o", loop,
                     *model_args)
    assert code == EXIT_USAGE
    assert (f"clipseg segment: error: -o {loop}: expected an output folder, got a symbolic "
            "link that loops or points to nothing ('loop')") in err


# --------------------------------------------------------------------------------------------
# 6: leftover temp files of a killed run
# --------------------------------------------------------------------------------------------
def test_leftover_pattern_matches_the_real_temp_names(tmp_path):
    target = tmp_path / "a.tif"
    with atomic.atomic_path(target) as tmp:
        assert atomic.leftovers(target) == [tmp]
        assert atomic.is_leftover(tmp, target)
        assert not atomic.is_leftover(tmp, tmp_path / "a.ti")
        tmp.write_bytes(b"x")
    assert atomic.leftovers(target) == [] and target.read_bytes() == b"x"


def test_resume_removes_only_this_tools_leftovers(tmp_path, model_args, capsys):
    src = save(tmp_path / "in" / "big.png", scene(5, (90, 120)))
    other = save(tmp_path / "in" / "small.png", scene(6))
    out = tmp_path / "out"
    native = list(model_args)
    native[native.index("--short-side") + 1] = "0"
    args = ["--classes", CLASSES, "-o", out, "--scores", "--tile-size", "48", "--resume",
            *native]
    code, _ = _run(capsys, "segment", src, other, *args)
    assert code == EXIT_OK
    labels_before, _ = io.read_labels(out / "big", lazy=False)
    # a run killed while rewriting big: its sidecar is gone, its temp files are left
    (out / "big.clipseg.json").unlink()
    ours = [out / ".big.tif.a1b2c3d4.part", out / ".big.scores.tif.zz_9x8y7.part",
            out / ".big.png.00000000.part", out / ".coco.json.abcdefgh.part"]
    for path in ours:
        path.write_bytes(b"\0" * 4096)
    # not ours, or of a complete result that is not rewritten
    keep = [out / name for name in (".big.tif.part", ".big.tif.a1b2c3d45.part",
                                    "big.tif.a1b2c3d4.part", ".bigger.tif.a1b2c3d4.part",
                                    ".small.png.a1b2c3d4.part", "notes.part")]
    for path in keep:
        path.write_bytes(b"keep")
    (out / ".big.tif.dirdirdi.part").mkdir()
    code, err = _run(capsys, "segment", src, other, *args)
    assert code == EXIT_OK and "1 segmented, 1 skipped" in err
    assert [p for p in ours if p.exists()] == []
    assert all(p.read_bytes() == b"keep" for p in keep)
    assert (out / ".big.tif.dirdirdi.part").is_dir()
    labels, meta = io.read_labels(out / "big", lazy=False)
    assert meta["file"] == "big.tif"
    np.testing.assert_array_equal(labels, labels_before)
