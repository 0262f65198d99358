"""One error tree: every exception class router-stream defines sits under ``RouterStreamError``
and is drawn, under its real parent, in the docstring of :mod:`router_stream.errors`.

The classes are found by importing every module of the package, so a new ``class X(ValueError)``
anywhere fails here until it gets a place in the tree (and in the drawing). Private exceptions
(``_Skip``) are control flow inside one module and are left out; test_layout keeps them there.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re

import pytest

import router_stream
from router_stream import cli, errors
from router_stream.errors import RouterStreamError


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(router_stream.__path__, "router_stream."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                assert name not in found or found[name] is obj, f"two exception classes named {name}"
                found[name] = obj
    return found


def _drawn_tree(doc: str) -> dict[str, str | None]:
    """``{class: parent}`` as drawn in the docstring (the root's parent is None)."""
    lines = doc.split("::", 1)[1].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in lines:
        if re.match(r"^    RouterStreamError\b", line):
            parents["RouterStreamError"] = None
            stack = ["RouterStreamError"]
            continue
        m = re.match(r"^(    [│ ]*)[├└]── (\w+)", line)
        if not m:
            continue
        depth = (len(m.group(1)) - 4) // 4 + 1
        name = m.group(2)
        assert name not in parents, f"{name} drawn twice"
        parents[name] = stack[depth - 1]
        del stack[depth:]
        stack.append(name)
    return parents


EXCEPTIONS = _defined_exceptions()
DRAWN = _drawn_tree(errors.__doc__ or "")


def test_the_walk_finds_the_tree_and_the_classes_defined_elsewhere() -> None:
    # guards the two helpers: a parser that finds nothing would make the tests below vacuous
    assert {"RouterStreamError", "ConfigError", "ModelError", "FatalModelError"} <= DRAWN.keys()
    assert DRAWN["FatalModelError"] == "ModelError"
    assert {"TopicMissing", "ArtifactError", "BatchParseError"} <= EXCEPTIONS.keys()


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_exception_class_is_in_the_tree(name: str) -> None:
    cls = EXCEPTIONS[name]
    assert issubclass(cls, RouterStreamError), (
        f"{cls.__module__}.{name} does not derive from router_stream.errors.RouterStreamError: "
        "give it a place in the tree (keep a built-in base as a second base if callers catch it)"
    )
    assert name in DRAWN, f"{cls.__module__}.{name} is not drawn in router_stream/errors.py's docstring"
    if cls is not RouterStreamError:
        parent = next(b for b in cls.__bases__ if issubclass(b, RouterStreamError))
        assert DRAWN[name] == parent.__name__, (
            f"{name} is drawn under {DRAWN[name]} but derives from {parent.__name__}"
        )


def test_every_class_drawn_exists() -> None:
    assert sorted(set(DRAWN) - set(EXCEPTIONS)) == []


def test_dead_types_are_gone() -> None:
    # PoisonRecord was never raised (a bad record is a Poison value) and RoutingError never caught
    assert not hasattr(errors, "PoisonRecord") and not hasattr(errors, "RoutingError")


def test_builtin_bases_are_kept_for_callers_that_catch_them() -> None:
    from router_stream.learning.artifact import ArtifactError
    from router_stream.routing.expressions import ExpressionError
    from router_stream.state.changelog import TopicMissing

    assert issubclass(ExpressionError, ValueError) and issubclass(ArtifactError, ValueError)
    assert issubclass(TopicMissing, LookupError) and issubclass(TopicMissing, errors.SetupError)


def test_the_cli_prints_any_tree_error_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from router_stream.learning.artifact import ArtifactError

    def boom(args: argparse.Namespace) -> int:
        raise ArtifactError("model.npz: not a learned-router artifact (no __meta__ entry)")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=boom, command="boom")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert err == "error: model.npz: not a learned-router artifact (no __meta__ entry)\n"
