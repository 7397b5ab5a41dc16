"""Write docs/options.md from the option declarations (clipseg.config.option_specs).

Run: .venv/bin/python scripts/gen_options_doc.py   (a test fails when the page is stale)
"""
from __future__ import annotations

import sys
from pathlib import Path

from clipseg import config as C

TITLES = {"model": "Model", "readout": "Readout (the method)", "window": "Windows",
          "labels": "Labels", "refine": "Refinement (PAMR)"}
WIDGET = {"main": "main form", "advanced": "Advanced", "hidden": "—"}


def _default(spec: C.OptionSpec) -> str:
    if spec.default is None:
        return f"*{spec.none}*" if spec.none else "`None`"
    if spec.kind == "ints":
        return "`" + " ".join(str(v) for v in spec.default) + "`"
    if spec.kind == "mapping":
        return "none"
    return f"`{spec.default!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [
        "# Options",
        "",
        "Every option of a run, with its default. The same names are used by the widget, the",
        "`clipseg` command (`--name value`, underscores as dashes) and Python",
        "(`SegmentConfig().replace(name=value)`), and are stored in each result's JSON sidecar",
        "(resolved: the model's values filled in). An option whose default is in *italics* takes",
        "the model's registry value unless given (`none` on the command line asks for it again).",
        "",
        "*Generated from the declarations in `src/clipseg/config.py` by",
        "`scripts/gen_options_doc.py`; do not edit.*",
        "",
        f"Readouts: {', '.join(f'`{r}`' for r in C.READOUTS)} (see [method](method.md)).",
        "",
    ]
    specs = list(C.option_specs().values())
    for group, title in TITLES.items():
        lines += [f"## {title}", "",
                  "| option | flag | default | allowed | widget | what it does |",
                  "|---|---|---|---|---|---|"]
        for spec in (s for s in specs if s.group == group):
            allowed = spec.describe_range() + (f" {spec.unit}" if spec.unit else "")
            if spec.kind == "bool":
                allowed = "on / off"
            lines.append(f"| `{spec.name}` | `{spec.flag}` | {_default(spec)} | "
                         f"{_cell(allowed.strip())} | {WIDGET[spec.widget]} | "
                         f"{_cell(spec.help)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    target = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
