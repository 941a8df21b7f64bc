"""Packages import downwards only: every import in ``medseg/`` (module level and inside
functions, read with ``ast``) goes to the same floor or a lower one, and no two packages
import each other (directly or around a longer cycle).

Floors, lowest first (see docs/architecture.md)::

    0  medseg (version, notice), errors, registry, config_base, device
    1  io
    2  data, models, synthetic, losses, metrics
    3  checkpoint
    4  inference
    5  engine
    6  cli, viewer, __main__, api
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"

FLOORS: dict[str, int] = {
    "medseg": 0,
    "errors": 0,
    "registry": 0,
    "config_base": 0,
    "device": 0,
    "io": 1,
    "data": 2,
    "models": 2,
    "synthetic": 2,
    "losses": 2,
    "metrics": 2,
    "checkpoint": 3,
    "inference": 4,
    "engine": 5,
    "api": 6,
    "cli": 6,
    "viewer": 6,
    "__main__": 6,
}
#: what code inside the package may import from ``medseg`` itself (the rest of its namespace
#: is the lazy public API, which sits on the top floor)
ROOT_CONSTANTS = {"RESEARCH_USE_NOTICE", "__version__"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names)`` for every ``medseg`` import in ``path``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            found.append((target, node.lineno, [a.name for a in node.names]))
    return [f for f in found if f[0] == "medseg" or f[0].startswith("medseg.")]


def unit(module: str) -> str:
    """The floor unit of a dotted module: ``medseg.io.nifti`` -> ``io``, ``medseg`` -> ``medseg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medseg"


def violations(root: Path = PACKAGE) -> tuple[list[str], list[list[str]]]:
    """(imports from a higher floor, cycles between units) for the package at ``root``."""
    upward: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        here = unit(source)
        if here not in FLOORS:
            upward.append(f"{source}: unit {here!r} has no floor; add it to FLOORS")
            continue
        for target, line, names in imports_of(path, root):
            there = unit(target)
            if there == "medseg":
                extra = set(names) - ROOT_CONSTANTS
                if extra and here != "medseg":
                    upward.append(f"{source}:{line} imports {sorted(extra)} from the public API")
                continue
            if there not in FLOORS:
                upward.append(f"{source}:{line} imports {target}, which has no floor")
            elif FLOORS[there] > FLOORS[here]:
                upward.append(
                    f"{source}:{line} imports {target} (floor {FLOORS[there]} > {FLOORS[here]})"
                )
            if there != here:
                graph[here].add(there)
    return upward, find_cycles(graph)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's node list found by depth-first search (each reported once)."""
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append([*cycle, nxt])
            else:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return cycles


def test_every_import_points_down_and_no_package_cycle() -> None:
    upward, cycles = violations()
    assert upward == [], "imports from a higher floor:\n" + "\n".join(upward)
    assert cycles == [], "package cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_checker_catches_a_reintroduced_cycle(tmp_path: Path) -> None:
    """The checker itself fails on an upward import inside a function and on a cycle."""
    root = tmp_path / "medseg"
    for folder in ("inference", "engine", "metrics_pkg"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "inference" / "slices.py").write_text(
        "def f():\n    from medseg.engine.loop import g\n    return g\n"
    )
    (root / "engine" / "loop.py").write_text("from ..inference import slices\n")
    upward, cycles = violations(root)
    assert any("medseg.inference.slices:2 imports medseg.engine.loop" in v for v in upward)
    assert ["engine", "inference", "engine"] in cycles
    assert any("metrics_pkg" in v and "no floor" in v for v in upward)


@pytest.mark.parametrize(
    ("module", "expected"),
    [("medseg.io.nifti", "io"), ("medseg", "medseg"), ("medseg.checkpoint", "checkpoint")],
)
def test_unit(module: str, expected: str) -> None:
    assert unit(module) == expected
