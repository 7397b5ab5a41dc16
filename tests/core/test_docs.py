"""Docs that are generated from code stay in step with it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_options_doc",
                                                  ROOT / "scripts" / "gen_options_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_page_matches_the_config_dataclasses():
    generated = _load_generator().render()
    on_disk = (ROOT / "docs" / "options.md").read_text()
    assert on_disk == generated, "docs/options.md is stale: run scripts/gen_options_doc.py"


def test_every_option_has_a_row_with_its_flag_and_help():
    from clipseg.config import option_specs

    page = (ROOT / "docs" / "options.md").read_text()
    for spec in option_specs().values():
        row = next((line for line in page.splitlines() if line.startswith(f"| `{spec.name}` |")),
                   None)
        assert row is not None, f"no row for {spec.name}"
        assert f"`{spec.flag}`" in row and spec.help.replace("|", "\\|") in row


def test_relative_links_in_readme_and_docs_resolve():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             ROOT / "benchmarks" / "README.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("#") or target.startswith("mailto:"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links: " + ", ".join(broken)
