"""No import cycle in ``router_stream``: read from the source, so a new one fails here, printed.

Two graphs are built from every module's import statements (``ast``; nothing is imported):

* **load time**: imports that run when a module is imported (module level, class bodies,
  ``try``/``if`` blocks), without those under ``if TYPE_CHECKING:`` (never run). A cycle here is
  a module that can see its neighbour half-initialised.
* **with late imports**: the same plus imports inside functions. A function-level import that
  closes a cycle is how a load-time cycle gets hidden (``config`` → strategies → providers →
  ``config`` once hid behind the judge's late import), so those fail too. There is no allow-list:
  a cycle is fixed by moving the shared part into a module both can import.

An edge goes to the module named (``from .x import y`` → ``x``, or ``x.y`` when that is a module),
and to each package whose ``__init__`` the import runs (a package the importer is not inside).
"""

from __future__ import annotations

import ast
import functools
import itertools
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import router_stream


@dataclass
class ImportGraph:
    """``edges[a][b]`` = the line of ``a`` that imports ``b`` (the first such line)."""

    load: dict[str, dict[str, int]] = field(default_factory=dict)
    late: dict[str, dict[str, int]] = field(default_factory=dict)  # load edges plus function-level ones


def _modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (source file, is a package) for every ``.py`` under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], late: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in ``body`` with whether it runs only when a function is called."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, late
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, late)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, True)
        else:  # class bodies, try/except/finally, if/else, with, for, while, match: same timing
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                block = getattr(node, name, None)
                if isinstance(block, list):
                    yield from _imports(block, late)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules of ``known`` that an import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = (module if is_package else module.rpartition(".")[0]).split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
    targets = []
    for name in names:
        while name and name not in known:  # ``import pkg.mod.Class``-like names: the module part
            name = name.rpartition(".")[0]
        if name:
            targets.append(name)
    return targets


def import_graph(root: Path, package: str) -> ImportGraph:
    """The import graph of the package whose ``__init__.py`` is in ``root`` (edges inside it only)."""
    modules = _modules(root, package)
    known = set(modules)
    graph = ImportGraph({m: {} for m in modules}, {m: {} for m in modules})
    for module, (path, is_package) in modules.items():
        for node, late in _imports(ast.parse(path.read_text(), str(path)).body):
            for target in _targets(node, module, is_package, known):
                # importing ``a.b.c`` from outside ``a.b`` runs ``a.b``'s __init__ first
                parts = target.split(".")
                inits = [".".join(parts[:i]) for i in range(1, len(parts))]
                for t in [target] + [p for p in inits if not (module == p or module.startswith(p + "."))]:
                    if t != module:
                        graph.late[module].setdefault(t, node.lineno)
                        if not late:
                            graph.load[module].setdefault(t, node.lineno)
    return graph


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package graph is far too shallow to hit the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_a_cycle(edges, component) for component in components]


def _a_cycle(edges: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in component:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {sorted(component)}")


def describe(edges: dict[str, dict[str, int]], cycle: list[str]) -> str:
    """``a (line 3) -> b (line 9) -> a``: each step with the line of the import."""
    steps = [f"{a} (line {edges[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


# ---------------------------------------------------------------- router_stream itself
PACKAGE_ROOT = Path(router_stream.__file__).parent


@functools.cache
def package_graph() -> ImportGraph:
    return import_graph(PACKAGE_ROOT, "router_stream")


def test_router_stream_has_no_import_cycle_at_load_time():
    graph = package_graph()
    assert len(graph.load) > 50, "the walk found too few modules to be reading router_stream"
    found = [describe(graph.load, c) for c in cycles(graph.load)]
    assert not found, "import cycles at load time:\n  " + "\n  ".join(found)


def test_no_function_level_import_closes_a_cycle():
    graph = package_graph()
    found = [describe(graph.late, c) for c in cycles(graph.late)]
    assert not found, (
        "a function-level import closes an import cycle (a late import hiding a load-time cycle; "
        "move the shared part into a module both can import):\n  " + "\n  ".join(found)
    )


def test_the_configuration_no_longer_reaches_itself_through_the_strategies():
    """The cycle this test file was written for: config -> routing registry -> judge ->
    providers.openai -> config. The judge now gets its client through the BuildContext."""
    graph = package_graph()
    assert "router_stream.routing.registry" in graph.load["router_stream.config"]
    assert "router_stream.providers.openai" not in graph.late["router_stream.routing.judge"]
    for module, targets in graph.late.items():
        if module.startswith("router_stream.routing."):
            assert "router_stream.config" not in targets, f"{module} imports router_stream.config"


# ---------------------------------------------------------------- the checker on small packages
def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package ``pkg`` under ``tmp_path`` holding ``files`` (relative path -> source); each
    directory without an ``__init__.py`` among them gets an empty one."""
    root = tmp_path / "pkg"
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(source))
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return root


def test_a_load_time_cycle_through_relative_imports_is_found_and_printed(tmp_path):
    root = make_package(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": "import os\n\nfrom .a import thing\n",
            "c.py": "from .a import x\n",  # into the cycle, not part of it
        },
    )
    graph = import_graph(root, "pkg")
    assert cycles(graph.load) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(graph.load, ["pkg.a", "pkg.b", "pkg.a"]) == "pkg.a (line 1) -> pkg.b (line 3) -> pkg.a"


def test_type_checking_imports_are_no_edge_and_function_imports_only_late(tmp_path):
    root = make_package(
        tmp_path,
        {
            "c.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from .d import X
                else:
                    X = None
            """,
            "d.py": "from .c import X\n",
            "e.py": """
                def f():
                    from .f import z
                    return z
            """,
            "f.py": "from pkg import e\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert cycles(graph.load) == []
    assert cycles(graph.late) == [["pkg.e", "pkg.f", "pkg.e"]]


def test_cycles_through_subpackages_absolute_imports_and_package_inits(tmp_path):
    root = make_package(
        tmp_path,
        {
            # h -> sub (absolute) -> sub.g (its __init__) -> h (two levels up)
            "h.py": "import pkg.sub\n",
            "sub/__init__.py": "from .g import G\n",
            "sub/g.py": "from ..h import H\n",
            # i imports a module of sub2; sub2's __init__ runs first and imports i back
            "i.py": "try:\n    from .sub2.j import J\nexcept ImportError:\n    J = None\n",
            "sub2/__init__.py": "from ..i import I\n",
            "sub2/j.py": "J = 1\n",
            # a package importing its own module from its __init__ is no cycle
            "sub3/__init__.py": "from .k import K\n",
            "sub3/k.py": "from pkg.sub3.m import M\n",
            "sub3/m.py": "class M:\n    import pkg.sub3.k as k\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert sorted(cycles(graph.load)) == [
        ["pkg.h", "pkg.sub", "pkg.sub.g", "pkg.h"],
        ["pkg.i", "pkg.sub2", "pkg.i"],
        ["pkg.sub3.k", "pkg.sub3.m", "pkg.sub3.k"],  # a class body runs at load time
    ]
