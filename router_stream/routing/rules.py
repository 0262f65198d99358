"""Rules over request fields: the first rule whose ``when`` expression is true picks ``then``.

Example::

    - type: rules
      name: by-content
      rules:
        - when: 'fields.lang == "de"'
          then: specialist
        - when: 'len(prompt) > 200 or "legal" in tags'
          then: strong
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..schemas import Request
from .base import Decision, RoutingContext
from .expressions import Expression, ExpressionError, always_true, request_names
from .strategy_config import BuildContext, StrategyConfigBase


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: str
    then: str

    @field_validator("when")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            Expression(v)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return v


class RulesConfig(StrategyConfigBase):
    type: Literal["rules"]
    name: str = "rules"
    rules: list[Rule] = Field(min_length=1)

    def referenced_candidates(self) -> list[tuple[str, str]]:
        return [(f".rules[{i}].then", r.then) for i, r in enumerate(self.rules)]

    def always_decides(self) -> str | None:
        """Why no request gets past this strategy, or None: a rule whose ``when`` is true whatever
        the request (``True``, ``1 == 1``) is a catch-all. Expressions that read the request are
        never judged, so this errs on the side of None."""
        for i, rule in enumerate(self.rules):
            if always_true(rule.when):
                return f"rules[{i}] `when: {rule.when}` matches every request"
        return None

    def build(self, ctx: BuildContext) -> RulesStrategy:
        return RulesStrategy(self)


class RulesStrategy:
    """Evaluates expressions in order; abstains when none matches."""

    def __init__(self, config: RulesConfig) -> None:
        self.name = config.name
        self._rules = [(i, Expression(r.when), r.then) for i, r in enumerate(config.rules)]

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        names = request_names(request, ctx.key, ctx.headers)
        problems = []
        for index, expr, then in self._rules:
            matched, problem = expr.evaluate(names)
            if problem:
                problems.append(f"rule {index}: {problem}")
            if matched:
                return Decision(then, reason=f"rule {index} matched: {expr.source}", detail={"rule": index})
        ctx.explain("no rule matched" + (f" ({'; '.join(problems)})" if problems else ""))
        return None
