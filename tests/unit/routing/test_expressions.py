"""Rule expressions: evaluated over a request's names, unsafe or invalid ones rejected, problems reported."""

from __future__ import annotations

import pytest

from router_stream.routing.expressions import Expression, ExpressionError, request_names
from router_stream.schemas import Request


@pytest.mark.parametrize(
    "expr,expected",
    [
        ("len(prompt) > 200", False),
        ('fields.lang == "de"', True),
        ('"legal" in tags', True),
        ('get(fields, "tier", "free") == "gold"', False),
        ("fields.missing == 1", False),
        ('key == "alice" and n_messages == 1', True),
    ],
)
def test_expressions_evaluate_over_request(expr, expected):
    req = Request(request_id="r", prompt="hello", fields={"lang": "de"}, tags=["legal"])
    matched, _ = Expression(expr).evaluate(request_names(req, "alice"))
    assert matched is expected


@pytest.mark.parametrize(
    "expr",
    [
        '__import__("os")',
        'open("x")',
        "prompt.__class__",
        "lambda: 1",
        "1 +",
        "unknown_name == 1",
        "[x for x in tags]",
    ],
)
def test_unsafe_or_invalid_expressions_are_rejected(expr):
    with pytest.raises(ExpressionError):
        Expression(expr)


def test_one_expression_evaluates_each_request_on_its_own_names():
    """The evaluator is kept per expression: a later request must not see an earlier one's names."""
    expr = Expression('fields.lang == "de" and fields.tier == true')
    de = request_names(Request(request_id="a", prompt="x", fields={"lang": "de", "tier": True}), "k")
    en = request_names(Request(request_id="b", prompt="x", fields={"lang": "en", "tier": True}), "k")
    broken = request_names(Request(request_id="c", prompt="x", fields={"lang": "de"}), "k")
    assert [expr.evaluate(n)[0] for n in (de, en, de, broken, de)] == [True, False, True, False, True]
    assert "tier" in (expr.evaluate(broken)[1] or "")


def test_runtime_problem_reported_not_raised():
    matched, problem = Expression("fields.nope > 1").evaluate(
        request_names(Request(request_id="r", prompt="x"), "k")
    )
    assert matched is False and "nope" in problem
