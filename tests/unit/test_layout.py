"""Layout rules checked from the source (AST, nothing imported): no private name crosses a module.

A leading underscore says "only this module (or, for a ``_module``, only its package) uses
this". The rule holds for every module under ``router_stream/``: a module may not

- import a private name from another module (``from .x import _y``, ``from . import _y`` where
  ``_y`` is not a module of its own package),
- reach a private attribute of a module it imported (``import x`` then ``x._y``), or
- import from a private module of a package it is not part of (``from .features._tfidf import X``
  outside ``features/``: the package's ``__init__`` is its surface).

Violations that predate the rule sit in :data:`KNOWN_VIOLATIONS` (issue 18 removes them); a new
one fails, and so does an entry that no longer occurs, so the list only shrinks.

The public surface is ``router_stream.__all__`` (the package's ``__init__``): every name in it
resolves, and the Python samples in the docs (and the example strategy they point to) import
only those names, from ``router_stream`` itself, so a user copying them never depends on an
internal module.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import re
from pathlib import Path

import router_stream

ROOT = Path(router_stream.__file__).resolve().parent
REPO = ROOT.parent

#: Private names crossing modules outside ``router_stream/learning/`` when the rule came in
#: (issue 18, "a tree that reads like aiokafka and httpx", will give each one home or a public
#: name). ``router_stream/learning/`` has none and may not gain any. Keyed by importing module.
KNOWN_VIOLATIONS: dict[str, set[str]] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package_module(dotted: str) -> bool:
    """Whether ``dotted`` (``router_stream.x.y``) is a module or package in this source tree."""
    if dotted.split(".")[0] != ROOT.name:
        return False
    base = ROOT.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def violations(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """Every private name module ``module`` (source text ``source``) takes from another module of
    router-stream, as (what, line). Private names of the standard library and of other packages
    (``os._exit``, ``re._parser``) are not this rule's business."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source, module)
    found: list[tuple[str, int]] = []
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_package_module(alias.name):
                    module_aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            origin = _resolve(node.module, node.level, package)
            if not _is_package_module(origin):
                continue  # the standard library's and other packages' names are theirs to judge
            parts = origin.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])  # the package the private module belongs to
                if (
                    _private(part)
                    and _is_package_module(".".join(parts[: i + 1]))
                    and not (package == owner or package.startswith(owner + "."))
                ):
                    found.append((f"from {origin} import ... (a private module of {owner})", node.lineno))
                    break
            for alias in node.names:
                full = f"{origin}.{alias.name}"
                own_submodule = (
                    _is_package_module(full)  # its package's (or a parent's) private module
                    and (package == origin or package.startswith(origin + "."))
                )
                if _private(alias.name) and not own_submodule:
                    found.append((f"from {origin} import {alias.name}", node.lineno))
                elif _is_package_module(full):
                    module_aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in module_aliases:
                found.append((ast.unparse(node), node.lineno))
    return found


def _all_violations() -> dict[str, list[tuple[str, int]]]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        found = violations(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")
        if found:
            out[_module_name(path)] = found
    return out


def test_the_checker_sees_each_kind_of_violation():
    """The checker itself can fail: a module written with each forbidden form is caught, and
    the allowed forms (public names, a package's own private modules, private attributes of
    objects that are not modules) are not."""
    source = (
        "from .features import _x\n"
        "from .features._tfidf import TfidfFeaturizer\n"
        "from . import evaluation\n"
        "import router_stream.learning.data as data\n"
        "import numpy as np\n"
        "evaluation._y\n"
        "data._z\n"
        "np.linalg._not_ours\n"
        "from .features import check_featurizer\n"
        "obj = object()\n"
        "obj._fine\n"
    )
    found = [what for what, _ in violations(source, "router_stream.learning.probe")]
    assert sorted(found) == sorted(
        [
            "from router_stream.learning.features import _x",
            "from router_stream.learning.features._tfidf import ... (a private module of router_stream.learning.features)",
            "evaluation._y",
            "data._z",
        ]
    )
    inside = "from ._tfidf import TfidfFeaturizer\nfrom . import _tfidf\n"
    assert violations(inside, "router_stream.learning.features", is_package=True) == []
    assert (
        violations(
            "from .._tfidf import hashed_counts\nfrom .. import _tfidf\n",
            "router_stream.learning.features.sub.mod",
        )
        == []
    )
    assert violations("from .features import _tfidf\n", "router_stream.learning.train") == [
        ("from router_stream.learning.features import _tfidf", 1)
    ]


def test_no_private_name_crosses_a_module_in_learning():
    found = {m: v for m, v in _all_violations().items() if m.startswith("router_stream.learning")}
    assert found == {}, f"private names imported across modules under router_stream/learning/: {found}"


def test_no_new_private_name_crosses_a_module_anywhere():
    found = {m: {what for what, _ in v} for m, v in _all_violations().items()}
    new = {m: sorted(v - KNOWN_VIOLATIONS.get(m, set())) for m, v in found.items()}
    new = {m: v for m, v in new.items() if v}
    assert new == {}, (
        "private names imported across modules (make the name public in the module that owns it, "
        f"or give it one home): {new}"
    )
    stale = {m: sorted(v - found.get(m, set())) for m, v in KNOWN_VIOLATIONS.items()}
    stale = {m: v for m, v in stale.items() if v}
    assert stale == {}, f"fixed, so remove from KNOWN_VIOLATIONS in tests/unit/test_layout.py: {stale}"


# ---------------------------------------------------------------- the public surface
def test_every_public_name_resolves() -> None:
    names = router_stream.__all__
    assert len(names) == len(set(names)), "a name listed twice in router_stream.__all__"
    assert {"Request", "Response", "Audit", "DeadLetter", "Strategy", "Decision", "RoutingContext"} <= set(
        names
    )
    assert {"RouterStreamError", "ConfigError", "ModelError", "load_config", "parse_config"} <= set(names)
    for name in names:
        value = getattr(router_stream, name)  # AttributeError names the one that does not resolve
        owner = getattr(value, "__module__", None) or "router_stream"  # constants have none
        assert owner.split(".")[0] == "router_stream", f"{name} comes from {owner}"
        assert name in dir(router_stream)
    assert not hasattr(router_stream, "NoSuchName")


def public_import_problems(source: str) -> list[str]:
    """Imports of router-stream in ``source`` that are not ``from router_stream import <public>``."""
    public = set(router_stream.__all__)
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            problems.append(f"line {node.lineno}: a relative import")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "router_stream":
            if node.module != "router_stream":
                problems.append(f"line {node.lineno}: from {node.module} import ... (an internal module)")
            problems += [
                f"line {node.lineno}: {a.name} is not public" for a in node.names if a.name not in public
            ]
        elif isinstance(node, ast.Import):
            problems += [
                f"line {node.lineno}: import {a.name} (an internal module)"
                for a in node.names
                if a.name.split(".")[0] == "router_stream" and a.name != "router_stream"
            ]
    return problems


def _python_samples() -> dict[str, str]:
    """``{"docs/x.md:LINE": code}`` for every python code block in the README and docs/."""
    samples = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            samples[f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"] = m.group(1)
    return samples


def test_the_public_import_check_can_fail() -> None:
    assert public_import_problems("from router_stream import Decision, Request\n") == []
    assert len(public_import_problems("from router_stream.routing.base import Decision\n")) == 1
    assert len(public_import_problems("from router_stream import Processor\n")) == 1
    assert len(public_import_problems("import router_stream.schemas\n")) == 1
    assert len(public_import_problems("from ..schemas import Request\n")) == 1


def test_docs_samples_import_only_public_names() -> None:
    samples = _python_samples()
    importing = {where for where, code in samples.items() if "router_stream" in code}
    assert any(w.startswith("docs/strategies.md") for w in importing), "the custom-strategy sample is gone"
    problems = {where: public_import_problems(samples[where]) for where in sorted(importing)}
    assert {w: p for w, p in problems.items() if p} == {}


def test_the_custom_strategy_sample_runs() -> None:
    """The sample in docs/strategies.md is a working strategy: it decides and abstains."""
    (code,) = [
        c for w, c in _python_samples().items() if w.startswith("docs/strategies.md") and "decide" in c
    ]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/strategies.md", "exec"), namespace)
    cls = next(v for v in namespace.values() if isinstance(v, type) and hasattr(v, "decide"))
    strategy = cls(config={"target": "eu"})
    assert isinstance(strategy, router_stream.Strategy)
    ctx = router_stream.RoutingContext(key="k", candidates=("eu", "us"))
    german = router_stream.Request(request_id="r1", prompt="Hallo", fields={"lang": "de"})
    decision = asyncio.run(strategy.decide(german, ctx))
    assert decision is not None and decision.candidate == "eu"
    other = router_stream.Request(request_id="r2", prompt="hi")
    assert asyncio.run(strategy.decide(other, ctx)) is None and ctx.take_note()


def test_the_example_strategy_the_docs_name_imports_only_public_names() -> None:
    text = (REPO / "docs" / "strategies.md").read_text(encoding="utf-8")
    found = re.search(r'class: "([\w.]+):ByLength"', text)
    assert found, "docs/strategies.md no longer names the example strategy"
    source = Path(importlib.import_module(found.group(1)).__file__ or "").read_text(encoding="utf-8")
    assert public_import_problems(source) == []
