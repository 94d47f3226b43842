"""Import circles and module sizes of the project's own packages.

Every import counts — top level, inside functions (lazy), under ``if TYPE_CHECKING``, and a
``"package.module:object"`` string that importlib loads (a kind's model class and paths) — since each
is a dependency a reader has to hold. ``python scripts/import_cycles.py`` prints the strongly
connected groups of modules and the largest modules; it exits 1 if there is a circle or a module
over ``--max-lines``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("emulators", "orchestrator", "services")
LOADED = re.compile(r"(?:emulators|orchestrator|services)(?:\.\w+)+:\w+")  # "module:object", loaded by importlib


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, resolving ``from package import module`` to the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and LOADED.fullmatch(node.value):
            targets = [node.value.partition(":")[0]]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> nx.DiGraph:
    mods = modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name, lines=len(path.read_text().splitlines()))
        for target in imports(name, path, set(mods)):
            # a package's __init__ is imported on the way to any module in it: not an edge of its own
            if not name.startswith(target + "."):
                g.add_edge(name, target)
    return g


def circles(g: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-lines", type=int, default=500)
    parser.add_argument("--top", type=int, default=10, help="how many of the largest modules to list")
    args = parser.parse_args()
    g = graph()
    found = circles(g)
    for group in found:
        print(f"circle of {len(group)}: " + ", ".join(group))
    print(f"{len(found)} import circles over {g.number_of_nodes()} modules")
    largest = sorted(g.nodes(data="lines"), key=lambda n: -n[1])
    for name, lines in largest[: args.top]:
        print(f"{lines:5d}  {name}")
    over = [name for name, lines in largest if lines > args.max_lines]
    if over:
        print(f"{len(over)} modules over {args.max_lines} lines: " + ", ".join(over))
    return 1 if found or over else 0


if __name__ == "__main__":
    sys.exit(main())
