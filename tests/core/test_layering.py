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


# --------------------------------------------------------------------------------------------
# the import graph: the core never imports the applications, and nothing imports in a circle
# --------------------------------------------------------------------------------------------
def _engine_imports() -> dict[str, set[tuple[str, bool]]]:
    """For each clipseg module, the clipseg modules it imports, with whether at module level."""
    import ast
    from pathlib import Path

    root = Path(clipseg.__file__).parent
    out: dict[str, set[tuple[str, bool]]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        package = parts if is_pkg else parts[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(id(n) for n in tree.body)
        typing_only = {id(n) for block in tree.body if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test)
                       for n in ast.walk(block)}
        found: set[tuple[str, bool]] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue  # for annotations only: never run
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "clipseg":
                    found.add((target, id(node) in top))
        out[name] = found
    return out


def _is_app(module: str) -> bool:
    return module.startswith(("clipseg.apps", "clipseg.formats"))


def test_the_core_never_imports_the_applications_or_file_formats():
    graph = _engine_imports()
    assert "clipseg.apps.cli" in graph and "clipseg.pipeline" in graph
    bad = sorted(f"{mod} -> {target}" for mod, targets in graph.items() if not _is_app(mod)
                 and mod not in ("clipseg", "clipseg.__main__")  # entry points
                 for target, _ in targets if _is_app(target))
    assert not bad, "core modules importing applications: " + ", ".join(bad)


def _cycle(graph: dict[str, set[tuple[str, bool]]], *, module_level_only: bool) -> list[str]:
    modules = set(graph)
    edges = {m: {t for t, top in ts if (top or not module_level_only) and t in modules
                 and t != m}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(modules):
        if state.get(start) is None and visit(start, [start]):
            break
    return cycle


def test_module_level_imports_have_no_cycle():
    cycle = _cycle(_engine_imports(), module_level_only=True)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_even_through_imports_inside_functions():
    """A lazy import (inside a function, to keep start-up fast) is still a dependency: the
    modules form layers, each importing only those below it (TYPE_CHECKING imports aside)."""
    cycle = _cycle(_engine_imports(), module_level_only=False)
    assert not cycle, "import cycle through a lazy import: " + " -> ".join(cycle)
