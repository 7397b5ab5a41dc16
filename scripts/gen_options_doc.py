"""Write docs/options.md from the configuration dataclasses (their defaults and docstrings).

Run: .venv/bin/python scripts/gen_options_doc.py   (a test fails when the page is stale)
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

from clipseg import config as C

GROUPS = [
    ("Model", C.ModelConfig, "model"),
    ("Readout (the method)", C.ReadoutConfig, "readout"),
    ("Windows", C.WindowConfig, "window"),
    ("Labels", C.LabelConfig, "labels"),
    ("Refinement (PAMR)", C.RefineConfig, "refine"),
]


def _param_docs(cls: type) -> dict[str, str]:
    doc = inspect.getdoc(cls) or ""
    if "Parameters" not in doc:
        return {}
    body = doc.split("Parameters", 1)[1].split("\n", 2)[2]
    out: dict[str, str] = {}
    names: list[str] = []
    for line in body.splitlines():
        head = re.match(r"^([a-z_][a-z_0-9, ]*) : (.*)$", line)
        if head:
            names = [n.strip() for n in head.group(1).split(",")]
            for n in names:
                out[n] = ""
            typ = head.group(2).strip()
            if typ.startswith("{"):
                for n in names:
                    out[n] = f"one of {typ}. "
        elif line.startswith("    ") and names:
            for n in names:
                out[n] += line.strip() + " "
    return {k: _markdown(v.strip()) for k, v in out.items()}


def _markdown(text: str) -> str:
    """numpydoc/rst inline markup to Markdown."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def render() -> str:
    lines = [
        "# Options",
        "",
        "Every option of a run, with its default. The same names are used by the widget, the",
        "`clipseg` command (`--name value`, underscores as dashes) and Python",
        "(`SegmentConfig().replace(name=value)`), and are stored in each result's JSON sidecar.",
        "`None` in a model-dependent field means the model's registry value.",
        "",
        "*Generated from `src/clipseg/config.py` by `scripts/gen_options_doc.py`; do not edit.*",
        "",
        f"Readouts: {', '.join(f'`{r}`' for r in C.READOUTS)} (see [method](method.md)).",
        "",
    ]
    for title, cls, group in GROUPS:
        docs = _param_docs(cls)
        lines += [f"## {title}", "", "| option | default | what it does |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            text = docs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{default!r}` | {text} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    target = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
