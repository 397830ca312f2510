"""The package's imports point one way, down the data flow (docs/architecture.md):

foundation -> config -> data / models -> sparsity -> metrics -> attacks -> defenses / verify -> scoring -> render
-> results -> sweep -> reporting -> check -> cli

Every import counts, including those inside functions; a module may import its own room and the rooms below it,
and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import robustprune

PACKAGE = Path(robustprune.__file__).parent

# Rank of each room (the first package component, or a top-level module); higher ranks may import lower ones.
RANKS = {
    "errors": 0,
    "version": 0,
    "validation": 0,
    "atomic": 0,
    "jsonio": 0,
    "records": 0,
    "registry": 0,
    "paths": 0,
    "provenance": 0,
    "progress": 0,
    "devices": 0,
    "boundary": 0,
    "outputs": 0,
    "config": 1,
    "data": 2,
    "models": 2,
    "sparsity": 3,
    "metrics": 4,
    "attacks": 5,
    "defenses": 6,
    "verify": 6,
    "scoring": 7,
    "render": 8,
    "results": 9,
    "sweep": 10,
    "reporting": 11,
    "check": 12,
    "cli": 13,
    "__main__": 13,
    "": 14,  # the package itself: the Python API facade
}


def module_sources(root: Path = PACKAGE) -> dict[str, str]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        out[".".join(("robustprune", *parts))] = path.read_text(encoding="utf-8")
    return out


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """Every robustprune module `module` imports, at any depth of its code."""
    base = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                root = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            names = [root, *(f"{root}.{a.name}" for a in node.names)]
        for name in names:
            # the deepest known module the name refers to (an attribute import names its module)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(sources: dict[str, str]) -> list[str]:
    """Upward imports and cycles, as readable lines (empty when the layout holds)."""
    known = set(sources)
    graph = {
        m: imports_of(m, src, (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").exists() or m == "robustprune", known)
        for m, src in sources.items()
    }
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "robustprune" or target.startswith(module + "."):
                continue  # a package may import its own submodules; nothing may import the facade
            if RANKS[room(target)] > RANKS[room(module)]:
                out.append(f"upward import: {module} -> {target} ({room(module)} below {room(target)})")
    # cycles: depth-first search over the module graph
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or nxt == "robustprune":
                continue
            if state.get(nxt) == 1:
                out.append("cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return out


def test_every_room_has_a_rank():
    rooms = {room(m) for m in module_sources()}
    assert rooms <= set(RANKS), f"rooms without a rank: {sorted(rooms - set(RANKS))}"


def test_imports_point_down_the_data_flow_and_never_in_a_circle():
    assert violations(module_sources()) == []


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("robustprune.data.dataset", "from robustprune.cli import main"),  # far upward, at module level
        (
            "robustprune.scoring.per_sample",
            "def f():\n    from robustprune.results.io import save_result\n",
        ),  # in a function
    ],
)
def test_a_deliberately_added_upward_import_is_caught(module, line):
    sources = module_sources()
    sources[module] = sources[module] + "\n" + line + "\n"
    found = violations(sources)
    assert any(v.startswith(f"upward import: {module} ->") for v in found), found


def test_a_deliberately_added_cycle_is_caught():
    sources = module_sources()
    sources["robustprune.validation"] += "\nfrom robustprune.atomic import write_text\n"
    sources["robustprune.atomic"] += "\nfrom robustprune.validation import escape\n"
    assert any(v.startswith("cycle:") for v in violations(sources))
