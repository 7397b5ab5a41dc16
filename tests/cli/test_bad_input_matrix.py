"""Every row of docs/cli.md's error table, run as written: exit status, message, no traceback.

The table (heading ``## Errors``) has the columns ``case | command | exit | message``; the
command and the message are in backticks. Each row runs in a fresh folder holding the files the
page names (built by :data:`FIXTURES`), through :func:`clipseg.apps.cli.main` in this process,
with the tiny test model's flags put before the row's own (so the row's flags win).
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from clipseg.apps.cli import main
from tests.cli.conftest import save, scene

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _cells(line: str) -> list[str]:
    """The cells of one markdown table row (no escaped pipes are used in the table)."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def error_table(text: str) -> list[dict[str, str]]:
    """Rows of the first table under the ``## Errors`` heading of ``text``."""
    section = text.split("\n## Errors\n", 1)
    if len(section) != 2:
        raise AssertionError("docs/cli.md: expected a '## Errors' section with the error table")
    body = section[1].split("\n## ", 1)[0]
    lines = [ln for ln in body.splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    assert header == ["case", "command", "exit", "message"], header
    assert set(lines[1].replace("|", "").strip()) <= set("-: "), lines[1]
    rows = []
    for line in lines[2:]:
        cells = _cells(line)
        assert len(cells) == 4, f"error table row with {len(cells)} cells: {line}"
        case, command, code, message = cells
        assert command.startswith("`clipseg ") and command.endswith("`"), command
        assert message.startswith("`") and message.endswith("`"), message
        rows.append({"case": case, "command": command[1:-1], "exit": code,
                     "message": message[1:-1]})
    return rows


ROWS = error_table(DOC.read_text(encoding="utf-8"))


def _nan_weights(tiny_clip, path: Path) -> None:
    state = {k: v.clone().contiguous() for k, v in tiny_clip.state_dict().items()}
    for v in state.values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    save_file(state, str(path))


#: The files the table's commands name, by name: how each is made in a row's folder.
FIXTURES = {
    "good.png": lambda folder, clip: save(folder / "good.png", scene(0, (96, 96))),
    "one.png": lambda folder, clip: save(folder / "one.png", np.full((1, 1, 3), 200, np.uint8)),
    "broken.png": lambda folder, clip: (folder / "broken.png").write_bytes(b"not an image"),
    "nan.safetensors": lambda folder, clip: _nan_weights(clip, folder / "nan.safetensors"),
    "comments.txt": lambda folder, clip: (folder / "comments.txt").write_text(
        "# classes.txt\n\n   # nothing else\n", encoding="utf-8"),
    "empty/": lambda folder, clip: (folder / "empty").mkdir(),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_clip) -> Path:
    folder = tmp_path_factory.mktemp("matrix-template")
    for make in FIXTURES.values():
        make(folder, tiny_clip)
    return folder


def test_the_table_is_there_and_covers_the_cases():
    assert len(ROWS) >= 20
    codes = {row["exit"] for row in ROWS}
    assert codes <= {"0", "1", "2", "130"} and {"1", "2"} <= codes
    commands = " ".join(row["command"] for row in ROWS)
    for flag in ("--short-side 12000", "--short-side 1000000", "--pamr-dilations 1000000",
                 "--pamr-iterations 1000000000", "--middle-layer 99", "--dsi-layers 99",
                 "--contrast-limits 255 0", "--channels 9 9 9", "nan.safetensors", "one.png"):
        assert flag in commands, flag


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
def test_error_table_row(row, template, tmp_path, tiny_files, monkeypatch, capfd):
    folder = tmp_path / "run"
    shutil.copytree(template, folder)
    monkeypatch.chdir(folder)
    argv = shlex.split(row["command"])
    assert argv[0] == "clipseg"
    sub, rest = argv[1], argv[2:]
    model = ["--model", tiny_files["name"], "--model-config", str(tiny_files["config"]),
             "--device", "cpu", "--short-side", "48", "--quiet"]
    if "--checkpoint" not in rest:
        model += ["--checkpoint", str(tiny_files["weights"])]
    code = main([sub, *model, *rest])
    out, err = capfd.readouterr()
    assert code == int(row["exit"]), f"{row['case']}: exit {code}\n{err}"
    assert row["message"] in err, f"{row['case']}: message not in stderr:\n{err}"
    assert "Traceback" not in err + out
    if code == 2 and sub in ("segment", "batch"):  # nothing was run: no output at all
        out_dir = folder / "out"
        written = sorted(p.name for p in out_dir.rglob("*")) if out_dir.exists() else []
        assert not [n for n in written if not n.startswith(".")], written
    # one line per refusal: the error names what arrived, not a cascade of messages
    errors = [ln for ln in err.splitlines() if re.search(r"error:|FAILED", ln)]
    assert errors, err
