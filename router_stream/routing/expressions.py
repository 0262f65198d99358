"""Safe expressions over request fields, on ``simpleeval`` (no ``eval``, no parser of ours).

Names an expression may use: ``prompt`` (all request text), ``messages``, ``fields``, ``tags``,
``params``, ``request_id``, ``key``, ``headers``, ``n_messages``; functions ``len``, ``lower``,
``upper``, ``get(mapping, name, default)``, ``any``, ``all``, ``min``, ``max``, ``int``,
``float``, ``str``, ``contains(haystack, needle)``. Dicts allow attribute access
(``fields.lang == "de"``). Expressions are checked at config load: a syntax error, an unknown
name or an unknown function fails with the rule's path.
"""

from __future__ import annotations

import ast
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from ..errors import ConfigError
from ..schemas import Request

FUNCTIONS: dict[str, Any] = {
    "len": len,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "get": lambda m, k, d=None: m.get(k, d) if isinstance(m, dict) else d,
    "any": any,
    "all": all,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "str": str,
    "contains": lambda h, n: n in h if h is not None else False,
}
NAMES = ("prompt", "messages", "fields", "tags", "params", "request_id", "key", "headers", "n_messages")
CONSTANTS = ("True", "False", "None", "true", "false", "null")


class ExpressionError(ConfigError, ValueError):
    """An expression that cannot be compiled; the message says what is wrong."""


#: what evaluating a checked expression can still raise on some request's names (a missing field,
#: a wrong type, a division by zero): the expression fails on that request, the worker does not
EVAL_ERRORS = (
    InvalidExpression,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    ZeroDivisionError,
    OverflowError,
)


class Expression:
    """A compiled expression; :meth:`evaluate` returns ``(matched, problem)``, :meth:`value` ``(value, problem)``."""

    __slots__ = ("_evaluator", "_tree", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                    fname = getattr(node.func, "id", ast.unparse(node.func))
                    raise ExpressionError(
                        f"unknown function {fname!r} in {source!r} (known: {', '.join(sorted(FUNCTIONS))})"
                    )
            elif isinstance(node, ast.Name):
                if node.id not in NAMES and node.id not in FUNCTIONS and node.id not in CONSTANTS:
                    raise ExpressionError(
                        f"unknown name {node.id!r} in {source!r} (known: {', '.join(NAMES)})"
                    )
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise ExpressionError(f"private attribute {node.attr!r} is not allowed in {source!r}")
            elif isinstance(node, (ast.Lambda, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)):
                raise ExpressionError(f"{type(node).__name__} is not allowed in {source!r}")
        self._tree = tree
        # One evaluator per expression, its names swapped per call: building one per call
        # (operator and node tables) was most of a rule's cost. Evaluation is synchronous, so
        # no two calls share it at once.
        self._evaluator = EvalWithCompoundTypes(functions=FUNCTIONS)

    def evaluate(self, names: dict[str, Any]) -> tuple[bool, str | None]:
        """``(matched, None)``, or ``(False, problem)`` when the expression fails on these names.

        ``names`` is what :func:`request_names` returns (its ``true``/``false``/``null``
        included); the evaluator keeps a reference only until the next call.
        """
        evaluator = self._evaluator
        evaluator.names = names
        try:
            return bool(evaluator.eval(self.source, previously_parsed=self._tree.body)), None
        except EVAL_ERRORS as exc:
            return False, f"{type(exc).__name__}: {exc}"

    def value(self, names: dict[str, Any]) -> tuple[Any, str | None]:
        """``(value, None)``, or ``(None, problem)``: the expression's result itself, not its truth
        (e.g. a cache-scope key such as ``get(fields, "tenant", key)``)."""
        evaluator = self._evaluator
        evaluator.names = names
        try:
            return evaluator.eval(self.source, previously_parsed=self._tree.body), None
        except EVAL_ERRORS as exc:
            return None, f"{type(exc).__name__}: {exc}"


def request_names(request: Request, key: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The variables an expression sees for ``request``."""
    return {
        "prompt": request.text(),
        "messages": request.chat_messages(),
        "fields": request.fields,
        "tags": request.tags,
        "params": request.call_params(),  # params overlaid by top-level chat-completions fields
        "request_id": request.request_id,
        "key": key,
        "headers": headers or {},
        "n_messages": len(request.messages or []) or 1,
        "true": True,
        "false": False,
        "null": None,  # JSON spellings of the constants
    }


def always_true(source: str) -> bool:
    """Whether ``source`` is true for every request: it reads no request name (only constants
    and functions of them, e.g. ``True``, ``1 == 1``, ``len("x") > 0``) and evaluates true.
    Used to spot a catch-all rule at load; an expression that reads the request is never
    called always-true, even when it happens to be (``len(prompt) >= 0``)."""
    try:
        expr = Expression(source)
    except ExpressionError:
        return False
    if any(isinstance(node, ast.Name) and node.id in NAMES for node in ast.walk(expr._tree)):
        return False
    matched, problem = expr.evaluate({"true": True, "false": False, "null": None})
    return matched and problem is None


def check_expression(source: str | None) -> str | None:
    """``source`` if it compiles (a pydantic validator's ValueError naming the problem otherwise)."""
    if source is not None:
        try:
            Expression(source)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
    return source


def scope_problem(scope: str, scope_field: str | None, scope_expression: str | None) -> str | None:
    """What a ``scope: key | field | expression`` setting (cache, budgets) lacks, or None."""
    if scope == "field" and not scope_field:
        return "scope 'field' needs scope_field (a key of request.fields, e.g. tenant)"
    if scope == "expression" and not (scope_expression or "").strip():
        return "scope 'expression' needs scope_expression (e.g. 'get(fields, \"tenant\", key)')"
    return None
