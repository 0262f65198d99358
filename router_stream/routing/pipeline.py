"""The strategy pipeline: ask strategies in order, the first decision wins.

A *sticky* decision (the key's cached decision, made earlier by strategy *k*) takes strategy
*k*'s place in that order, never the pipeline's head: the strategies before *k* run on every
request and win when they decide, so a compliance rule placed first is never skipped because a
later strategy's decision for the key is cached. Only when they all abstain does the sticky
decision apply, without asking *k* again (that is what makes it sticky).

A decision naming something that is not a candidate is a *routing miss*: recorded in the audit,
and the pipeline asks the next strategy. A strategy that raises is recorded as ``error`` and
skipped, so a broken strategy degrades routing instead of stopping the worker. When nobody
decides, the configured default serves the request (``decided_by = "default"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..schemas import CachedDecision, Request, Verdict
from .base import Decision, RoutingContext, Strategy
from .caching import DEFAULT_POLICY, CachePolicy

if TYPE_CHECKING:  # for the annotation only: the pipeline need not load the cascade strategy
    from .cascade import CascadePlan

log = logging.getLogger(__name__)

DEFAULT = "default"


@dataclass(slots=True)
class Routed:
    """The pipeline's result: the candidate, who decided, and every verdict on the way."""

    candidate: str
    decided_by: str
    verdicts: list[Verdict] = field(default_factory=list)
    cacheable: bool = False
    plan: CascadePlan | None = None  # the deciding strategy's Decision.plan (e.g. a cascade), for the worker
    ttl_s: float | None = None  # the deciding strategy's cache.ttl_s (None: the global cache.ttl_s)
    #: what became of the sticky decision passed to :meth:`Pipeline.route`: ``hit`` (it decided),
    #: ``preempted`` (a strategy before its decider decided), ``orphaned`` (its decider is no longer
    #: in the pipeline, or no longer caches), or None when none was passed
    sticky: str | None = None


async def close_strategy(strategy: object) -> None:
    """Release what a strategy holds (a judge's or scorer's HTTP client), if it has ``aclose()``."""
    close = getattr(strategy, "aclose", None)
    if close is not None:
        await close()


class Pipeline:
    def __init__(
        self,
        strategies: list[Strategy],
        candidates: tuple[str, ...],
        default: str,
        cache_policies: list[CachePolicy] | None = None,
    ) -> None:
        if default not in candidates:
            raise ValueError(f"default {default!r} is not a candidate")
        if cache_policies is not None and len(cache_policies) != len(strategies):
            raise ValueError("cache_policies needs one entry per strategy")
        self.strategies = strategies
        # per strategy object: its config's ``cache: {enabled, ttl_s}`` (routing/caching.py)
        self.cache_policies = {id(s): p for s, p in zip(strategies, cache_policies or [])}
        self.candidates = candidates
        self.default = default

    async def aclose(self) -> None:
        """Release what the strategies hold (:func:`close_strategy` each)."""
        for strategy in self.strategies:
            await close_strategy(strategy)

    def sticky_usable(self, cached: CachedDecision) -> bool:
        """Whether a cached decision can still apply: its decider is in this pipeline and still
        caches, and its candidate is still configured (a config change can retire either)."""
        if cached.candidate not in self.candidates:
            return False
        for strategy in self.strategies:
            if strategy.name == cached.decided_by:
                return self.cache_policies.get(id(strategy), DEFAULT_POLICY).enabled is not False
        return False

    async def route(
        self, request: Request, ctx: RoutingContext, sticky: CachedDecision | None = None
    ) -> Routed:
        """Ask the strategies in order; ``sticky`` (the key's fresh cached decision, if any) stands
        in for its decider at the decider's position (see the module docstring)."""
        verdicts: list[Verdict] = []
        if sticky is not None and not self.sticky_usable(sticky):
            routed = await self._ask(request, ctx, verdicts, None)
            routed.sticky = "orphaned"
            return routed
        return await self._ask(request, ctx, verdicts, sticky)

    async def _ask(
        self, request: Request, ctx: RoutingContext, verdicts: list[Verdict], sticky: CachedDecision | None
    ) -> Routed:
        for strategy in self.strategies:
            if sticky is not None and strategy.name == sticky.decided_by:
                age_s = max(0, ctx.now_ms - sticky.decided_at) / 1000
                verdicts.append(
                    Verdict(
                        strategy=strategy.name,
                        outcome="chose",
                        candidate=sticky.candidate,
                        reason=f"sticky decision for this key, made {age_s:.0f}s ago (not asked again)",
                        detail={"sticky": True, "decided_at": sticky.decided_at},
                    )
                )
                policy = self.cache_policies.get(id(strategy), DEFAULT_POLICY)
                return Routed(
                    sticky.candidate,
                    strategy.name,
                    verdicts,
                    cacheable=False,
                    ttl_s=sticky.ttl_s if sticky.ttl_s is not None else policy.ttl_s,
                    sticky="hit",
                )
            try:
                decision: Decision | None = await strategy.decide(request, ctx)
            except Exception as exc:  # a broken strategy must not stop the stream
                log.warning("strategy %s failed: %s", strategy.name, type(exc).__name__)
                verdicts.append(
                    Verdict(
                        strategy=strategy.name,
                        outcome="error",
                        reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                    )
                )
                ctx.take_note()
                continue
            note = ctx.take_note()
            if decision is None:
                verdicts.append(Verdict(strategy=strategy.name, outcome="abstained", reason=note))
                continue
            if decision.candidate not in self.candidates:
                verdicts.append(
                    Verdict(
                        strategy=strategy.name,
                        outcome="miss",
                        candidate=str(decision.candidate)[:100],
                        reason=f"{str(decision.candidate)[:100]!r} is not a candidate",
                        detail=decision.detail,
                    )
                )
                continue
            verdicts.append(
                Verdict(
                    strategy=strategy.name,
                    outcome="chose",
                    candidate=decision.candidate,
                    reason=decision.reason,
                    detail=decision.detail,
                )
            )
            policy = self.cache_policies.get(id(strategy), DEFAULT_POLICY)
            cacheable = policy.cacheable(decision.cacheable) and not ctx.cache_forbidden  # see forbid_cache
            return Routed(
                decision.candidate,
                strategy.name,
                verdicts,
                cacheable=cacheable,
                plan=decision.plan,
                ttl_s=policy.ttl_s,
                sticky="preempted" if sticky is not None else None,
            )
        # the sticky decider is always reached when it is in the pipeline (nothing before it decided)
        return Routed(self.default, DEFAULT, verdicts, cacheable=False)
