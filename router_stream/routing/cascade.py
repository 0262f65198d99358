"""Cascade: ask the cheapest candidate first; escalate while a validator rejects the answer.

Example::

    - type: cascade
      name: cheap-first
      candidates: [cheap, smart, best]   # cheapest first; at least 2
      validator:                          # one of the four below
        type: regex
        pattern: '^\\s*\\{'               # compiled at load; invalid or catastrophic: a config error
        must_match: true                  # false: the answer must NOT match
      when_all_rejected: last             # or best_effort

Validators (``validator.type``):

``min_length``  ``{type: min_length, chars: 200}``: the answer, stripped, has at least ``chars``
                characters.
``regex``       ``{type: regex, pattern: "...", must_match: true}``: ``re.search`` finds the
                pattern (``must_match: false``: does not find it).
``json_schema`` ``{type: json_schema, schema: {...}}``: the answer parses as JSON (one
                surrounding Markdown code fence, ```` ```json ... ``` ````, is stripped first) and
                fits the schema. Only a small subset of JSON Schema is supported, checked at load:
                ``type`` (object, array, string, number, integer, boolean, null, or a list of
                them), ``required``, ``properties``, ``enum``, ``items`` and ``minLength``;
                annotations (``$schema``, ``$id``, ``title``, ``description``, ``default``,
                ``examples``) are ignored; any other keyword is a config error (never silently
                unchecked). Properties not listed in ``properties`` are allowed.
``judge``       ``{type: judge, candidate: smart, prompt: "..."}``: asks the ``candidate`` (through
                the dispatcher, so its retries, breaker and fallback chain apply) whether the
                answer is acceptable. The optional ``prompt`` template may use ``{request}`` and
                must use ``{answer}``; both are inserted as JSON strings (data, not instructions).
                The reply's first whole word ``yes`` or ``no`` (case-insensitive) decides. A judge
                that fails (no answer, deadline, a reply with neither word or longer than
                ``max_reply_chars``) counts as **accept, with a note** in the audit: the cascade
                never escalates (or loops) because the judge is broken. The judge's attempts and
                cost are added to the request's.

When every candidate is rejected (or failed), ``when_all_rejected`` picks what is served:
``last`` (default) the last answer received (normally the last candidate's), ``best_effort`` the
rejected answer the validator ranks highest (min_length: the longest; json_schema: valid JSON
with the fewest schema problems over invalid JSON; regex and judge rank all alike), ties to the
later candidate. Either way the audit's ``cascade`` steps show it as served but not accepted.
When no candidate answered at all, the request fails with the last error.

The strategy always decides: ``candidates[0]`` with ``reason="cascade"``, ``detail={"cascade":
[names], "validator": type}`` and a :class:`CascadePlan` in ``Decision.plan``; the worker then
runs the plan (:func:`router_stream.processing.cascade_runner.run_cascade`). Cascade decisions are never
cached (each request runs its own cascade). A ``mode: batch`` candidate cannot be in a cascade.

The validators' models are :mod:`.cascade_validators`; this module is the strategy (config, plan).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from ..errors import ConfigError
from ..schemas import Request
from .base import Decision, RoutingContext
from .caching import StrategyCache
from .cascade_validators import (
    Check,
    JsonSchemaValidator,
    JudgeValidator,
    MinLengthValidator,
    RegexValidator,
    Validator,
)
from .strategy_config import BuildContext, StrategyConfigBase

# The validators live in .cascade_validators; Check and JudgeValidator are named here too for the
# worker's cascade runner, which imports them with the plan.
__all__ = ["CascadeConfig", "CascadePlan", "CascadeStrategy", "Check", "JudgeValidator", "Validator"]

log = logging.getLogger(__name__)


# ---- the strategy ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CascadePlan:
    """What the worker runs instead of a single call: candidates in order and the validator."""

    strategy: str
    candidates: tuple[str, ...]
    validator: MinLengthValidator | RegexValidator | JsonSchemaValidator | JudgeValidator
    when_all_rejected: Literal["last", "best_effort"] = "last"


class CascadeConfig(StrategyConfigBase):
    type: Literal["cascade"]
    name: str = "cascade"
    candidates: list[str] = Field(description="cheapest first")
    validator: Validator
    when_all_rejected: Literal["last", "best_effort"] = "last"

    @field_validator("cache")
    @classmethod
    def _never_cached(cls, v: StrategyCache | None) -> None:
        """The base gives every strategy ``cache``; a cascade has no sticky decisions to tune."""
        if v is not None:
            raise ValueError(
                "a cascade's decisions are never cached (each request runs its own cascade); remove cache"
            )
        return None

    @field_validator("candidates")
    @classmethod
    def _two_distinct(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"a cascade needs at least 2 candidates, cheapest first (got {len(v)})")
        if len(set(v)) != len(v):
            raise ValueError("a candidate appears twice")
        return v

    def referenced_candidates(self) -> list[tuple[str, str]]:
        refs = [(f".candidates[{i}]", name) for i, name in enumerate(self.candidates)]
        if isinstance(self.validator, JudgeValidator):
            refs.append((".validator.candidate", self.validator.candidate))
        return refs

    def always_decides(self) -> str | None:
        """A cascade decides every request (its first candidate, with the plan for the rest)."""
        return "a cascade starts every request on its first candidate"

    def build(self, ctx: BuildContext) -> CascadeStrategy:
        for i, name in enumerate(self.candidates):
            cand = ctx.candidates.get(name)
            if cand is not None and cand.mode == "batch":
                raise ConfigError(
                    f"strategy {self.name!r}: candidates[{i}] {name!r} has mode: batch, "
                    "which a cascade cannot wait for"
                )
        _warn_if_not_cheapest_first(self, ctx)
        return CascadeStrategy(self)


def _warn_if_not_cheapest_first(config: CascadeConfig, ctx: BuildContext) -> None:
    """The listed order is the calling order (it may be meant: latency, quality); a priced
    candidate listed after a pricier one is probably a mistake, so say so once, at load."""
    priced = []
    for i, name in enumerate(config.candidates):
        cand = ctx.candidates.get(name)
        if cand is not None and (cand.price_input_per_1k or cand.price_output_per_1k):
            priced.append((i, name, cand.price_input_per_1k + cand.price_output_per_1k))
    for (i, a, pa), (j, b, pb) in itertools.pairwise(priced):
        if pb < pa:
            log.warning(
                "cascade %r: candidates[%d] %r (%.4g USD per 1k in+out tokens) is cheaper than "
                "candidates[%d] %r (%.4g) but is called after it; list candidates cheapest first",
                config.name,
                j,
                b,
                pb,
                i,
                a,
                pa,
            )


class CascadeStrategy:
    """Always decides: the first (cheapest) candidate, with the plan for the rest."""

    def __init__(self, config: CascadeConfig) -> None:
        self.name = config.name
        self.plan = CascadePlan(
            config.name, tuple(config.candidates), config.validator, config.when_all_rejected
        )

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        plan = self.plan
        return Decision(
            plan.candidates[0],
            reason="cascade",
            detail={"cascade": list(plan.candidates), "validator": plan.validator.type},
            cacheable=False,
            plan=plan,
        )
