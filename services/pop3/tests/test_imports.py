"""pop3d's modules import each other without a cycle, counting imports under ``TYPE_CHECKING``
(and inside functions) too: parsed with ``ast``, not imported."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pop3d

PACKAGE = Path(pop3d.__file__).resolve().parent


def imports(path: Path) -> set[str]:
    """The pop3d modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pop3d":
                found.update(f"pop3d.{a.name}" for a in node.names)
            elif node.module.startswith("pop3d."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pop3d."))
    return found


def graph() -> dict[str, set[str]]:
    modules = {f"pop3d.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: imports(path) & modules.keys() for name, path in modules.items()}


def test_the_module_graph_is_acyclic() -> None:
    g = graph()
    assert g["pop3d.session"], "the parser found no imports at all"
    graphlib.TopologicalSorter(g).prepare()  # raises CycleError naming the cycle


def test_a_cycle_under_type_checking_is_found(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pop3d.b import B\n")
    assert imports(a) == {"pop3d.b"}
