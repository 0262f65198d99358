"""The strategy pipeline: ask strategies in order, the first decision wins.

A decision naming something that is not a candidate is a *routing miss*: recorded in the audit,
and the pipeline asks the next strategy. A strategy that raises is recorded as ``error`` and
skipped, so a broken strategy degrades routing instead of stopping the worker. When nobody
decides, the configured default serves the request (``decided_by = "default"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..schemas import Request, Verdict
from .base import Decision, RoutingContext, Strategy

log = logging.getLogger(__name__)

DEFAULT = "default"


@dataclass(slots=True)
class Routed:
    """The pipeline's result: the candidate, who decided, and every verdict on the way."""

    candidate: str
    decided_by: str
    verdicts: list[Verdict] = field(default_factory=list)
    cacheable: bool = False


class Pipeline:
    def __init__(self, strategies: list[Strategy], candidates: tuple[str, ...], default: str) -> None:
        if default not in candidates:
            raise ValueError(f"default {default!r} is not a candidate")
        self.strategies = strategies
        self.candidates = candidates
        self.default = default

    async def route(self, request: Request, ctx: RoutingContext) -> Routed:
        verdicts: list[Verdict] = []
        for strategy in self.strategies:
            try:
                decision: Decision | None = await strategy.decide(request, ctx)
            except Exception as exc:  # a broken strategy must not stop the stream
                log.warning("strategy %s failed: %s", strategy.name, type(exc).__name__)
                verdicts.append(Verdict(strategy=strategy.name, outcome="error",
                                        reason=f"{type(exc).__name__}: {str(exc)[:200]}"))
                ctx.take_note()
                continue
            note = ctx.take_note()
            if decision is None:
                verdicts.append(Verdict(strategy=strategy.name, outcome="abstained", reason=note))
                continue
            if decision.candidate not in self.candidates:
                verdicts.append(Verdict(
                    strategy=strategy.name, outcome="miss", candidate=str(decision.candidate)[:100],
                    reason=f"{str(decision.candidate)[:100]!r} is not a candidate", detail=decision.detail))
                continue
            verdicts.append(Verdict(strategy=strategy.name, outcome="chose", candidate=decision.candidate,
                                    reason=decision.reason, detail=decision.detail))
            return Routed(decision.candidate, strategy.name, verdicts, cacheable=decision.cacheable)
        return Routed(self.default, DEFAULT, verdicts, cacheable=False)
