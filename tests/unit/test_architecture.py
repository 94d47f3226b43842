"""The shape the code keeps: no import circles, modules a reader can hold, dependencies one way."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]


def _import_cycles_module():  # scripts/ is not a package: load the checker from its file
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_cycles", module)
    spec.loader.exec_module(module)
    return module


CHECKER = _import_cycles_module()
GRAPH = CHECKER.graph()


def _reaches(source_prefix: str) -> set[str]:
    """Every project module some module under ``source_prefix`` imports, directly or not."""
    found: set[str] = set()
    for node in GRAPH.nodes:
        if node == source_prefix or node.startswith(source_prefix + "."):
            found |= nx.descendants(GRAPH, node)
    return found


def test_the_checker_sees_lazy_type_checking_and_importlib_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from emulators.kernel import engine\n"
                      "def f():\n    import orchestrator.cli\n"
                      "KIND = dict(class_path='emulators.tester.device:Tester')\n")
    known = {"emulators.kernel.engine", "orchestrator.cli", "emulators.tester.device"}
    assert CHECKER.imports("x.m", source, known) == known


def test_no_import_circle() -> None:
    assert CHECKER.circles(GRAPH) == []


def test_no_module_over_500_lines() -> None:
    assert {name: lines for name, lines in GRAPH.nodes(data="lines") if lines > 500} == {}


def test_the_model_imports_only_itself() -> None:
    assert {m for m in _reaches("emulators.model") if not m.startswith("emulators.model")} == set()


def test_the_kernel_imports_only_itself_and_the_model() -> None:
    assert {m for m in _reaches("emulators.kernel")
            if not m.startswith(("emulators.kernel", "emulators.model"))} == set()


def test_dependencies_point_one_way() -> None:
    assert {m for m in _reaches("emulators") if not m.startswith("emulators")} == set()
    assert {m for m in _reaches("services") if m.startswith("orchestrator")} == set()
