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

Within and across packages, no module imports itself around a cycle of modules (``a`` imports
``b`` imports ... ``a``; imports inside functions count, ``if TYPE_CHECKING:`` ones do not, as
they never run), and no module imports another's private (``_name``) objects.
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


def _nodes(tree: ast.AST, type_checking: bool) -> list[ast.AST]:
    """Every node of ``tree`` (like ``ast.walk``), leaving out ``if TYPE_CHECKING:`` bodies
    unless ``type_checking``."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        test = node.test if isinstance(node, ast.If) else None
        if not type_checking and "TYPE_CHECKING" in {
            getattr(test, "id", ""),
            getattr(test, "attr", ""),
        }:
            todo += node.orelse
        else:
            todo += ast.iter_child_nodes(node)
    return found


def imports_of(
    path: Path, root: Path = PACKAGE, type_checking: bool = True
) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names)`` for every ``medseg`` import in ``path``
    (``type_checking=False``: only those that run, not the ``if TYPE_CHECKING:`` ones)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in _nodes(tree, type_checking):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            found.append((target, node.lineno, [a.name for a in node.names]))
    found.sort(key=lambda f: f[1])
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


def module_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports when it runs (at module level or
    inside functions). ``from pkg import sub`` is an import of the module ``pkg.sub``."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for source, path in modules.items():
        edges: set[str] = set()
        for target, _line, names in imports_of(path, root, type_checking=False):
            subs = {f"{target}.{n}" for n in names} & set(modules)
            edges |= subs
            if target in modules and (not names or len(subs) < len(names)):
                edges.add(target)
        graph[source] = edges - {source}
    return graph


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` for each group of modules that import each other (each
    strongly connected component of more than one module, Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group: set[str] = set()
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for start in sorted(graph):
        if start not in order:
            visit(start)
    return [_cycle_through(min(g), g, graph) for g in groups]


def _cycle_through(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest import path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph.get(node, set()) & group):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def private_imports(root: Path = PACKAGE) -> list[str]:
    """Each use of another module's private name: ``from medseg.x import _name`` or
    ``x._name`` on an imported medseg module (dunders such as ``__version__`` are public)."""
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    private = lambda name: name.startswith("_") and not name.startswith("__")  # noqa: E731
    found = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        aliases: dict[str, str] = {}
        for target, line, names in imports_of(path, root):
            for name in names:
                if f"{target}.{name}" in modules:
                    aliases[name] = f"{target}.{name}"
                elif private(name):
                    found.append(f"{source}:{line} imports {name} from {target}")
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname})
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and private(node.attr)
            ):
                found.append(f"{source}:{node.lineno} uses {node.attr} of {aliases[node.value.id]}")
    return found


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


def test_no_module_imports_itself_around_a_cycle() -> None:
    """A file-level cycle makes the import order matter (a half-initialised module)."""
    cycles = module_cycles(module_graph())
    assert cycles == [], "module import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    found = private_imports()
    assert found == [], (
        "private names used across modules (make them public or move them):\n" + "\n".join(found)
    )


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "medseg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_catches_module_cycles_inside_one_package(tmp_path: Path) -> None:
    """The shape of the old models cycle (a package imports its families, they import the
    registry back from the package), a cycle closed inside a function, and what is not one."""
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "def register(): ...\nfrom medseg.models import unet\n",
            "models/unet.py": "from medseg.models import register\n",
            "engine/__init__.py": "",
            "engine/a.py": "def f():\n    from medseg.engine import b\n",
            "engine/b.py": "from medseg.engine.a import f\n",
            "data/__init__.py": "",
            "data/params.py": "from medseg.data.plan import Plan\n",
            "data/plan.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from medseg.data.params import Params\n"
            ),
            "io/__init__.py": "from medseg.io import nifti\n",
            "io/nifti.py": "from medseg.io.atomic import atomic_path\n",
            "io/atomic.py": "",
        },
    )
    graph = module_graph(root)
    assert graph["medseg.models"] == {"medseg.models.unet"}
    assert graph["medseg.data.plan"] == set()  # type-only imports never run
    assert module_cycles(graph) == [
        ["medseg.engine.a", "medseg.engine.b", "medseg.engine.a"],
        ["medseg.models", "medseg.models.unet", "medseg.models"],
    ]


def test_checker_catches_private_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "__version__ = '0'\n",
            "engine/__init__.py": "",
            "engine/trainer.py": "def _resume_path(): ...\n",
            "engine/crossval.py": "from medseg.engine.trainer import _resume_path\n",
            "engine/join.py": (
                "from medseg import __version__\nfrom medseg.engine import trainer\n"
                "import medseg.engine.trainer as t\n"
                "def f():\n    return trainer._resume_path(), t._resume_path()\n"
            ),
        },
    )
    assert private_imports(root) == [
        "medseg.engine.crossval:1 imports _resume_path from medseg.engine.trainer",
        "medseg.engine.join:5 uses _resume_path of medseg.engine.trainer",
        "medseg.engine.join:5 uses _resume_path of medseg.engine.trainer",
    ]


VIEWER_CORE = PACKAGE / "viewer" / "core"


def test_viewer_core_imports_neither_the_page_nor_streamlit() -> None:
    """``viewer/core`` is pure logic (loading, rendering, review, measurements) that the
    page, the CLI, tests and benchmarks share; only ``viewer/ui`` knows Streamlit."""
    found = []
    for path in sorted(VIEWER_CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] == "streamlit" or name.startswith("medseg.viewer.ui")
            ]
        found += [
            f"{path.name}:{line} imports {target}"
            for target, line, _ in imports_of(path)
            if target.startswith("medseg.viewer.ui") or target == "medseg.viewer.launch"
        ]
    assert len(list(VIEWER_CORE.glob("*.py"))) > 5
    assert found == [], "viewer/core must stay free of the page:\n" + "\n".join(sorted(set(found)))
