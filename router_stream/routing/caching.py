"""Per-strategy decision-cache settings: ``cache: {enabled, ttl_s}`` on any strategy but ``cascade``.

Every strategy config (but ``cascade``, never cached) has an optional ``cache`` field of type
:class:`StrategyCache`::

    - type: judge
      candidate: cheap
      cache: {ttl_s: 600}        # judge decisions are sticky for 10 minutes (cache.ttl_s: 1 hour)
    - type: rules
      rules: [...]
      cache: {enabled: false}    # rule decisions are never sticky: the rules run on every request

``enabled: false`` makes none of that strategy's decisions sticky; unset or ``true`` keeps the
strategy's own per-decision flag (``Decision.cacheable``: true for every strategy except
``split`` with ``sticky: false``). ``ttl_s`` is how long a decision of that strategy stays sticky;
unset: the global ``cache.ttl_s``. The TTL travels with the cached entry
(:attr:`~router_stream.schemas.CachedDecision.ttl_s`), so changing it affects new decisions only.
The global ``cache.enabled: false`` turns the whole cache off whatever a strategy says.

:func:`cache_policy` reads the setting from any strategy config (``getattr``; a config class
without the field gets the defaults), and :class:`~router_stream.routing.pipeline.Pipeline`
applies it to the decisions it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrategyCache(BaseModel):
    """The ``cache`` field of a strategy config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        None,
        description="false: this strategy's decisions are never sticky; "
        "unset/true: the strategy's own per-decision flag",
    )
    ttl_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="how long its decisions stay sticky; unset: cache.ttl_s"
    )


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What the pipeline does with one strategy's decisions (the defaults change nothing)."""

    enabled: bool | None = None
    ttl_s: float | None = None

    def cacheable(self, decision_cacheable: bool) -> bool:
        return decision_cacheable and self.enabled is not False


DEFAULT_POLICY = CachePolicy()


def cache_policy(strategy_config: Any) -> CachePolicy:
    """The :class:`CachePolicy` of a strategy config (its ``cache`` field, if it has one)."""
    cache = getattr(strategy_config, "cache", None)
    if cache is None:
        return DEFAULT_POLICY
    if isinstance(cache, dict):
        cache = StrategyCache.model_validate(cache)
    return CachePolicy(enabled=cache.enabled, ttl_s=cache.ttl_s)
