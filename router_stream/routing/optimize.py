"""Cost-, latency- and load-aware choice: among the candidates good enough, the cheapest / fastest / least busy.

Example::

    - type: optimize
      name: cheapest-good-enough
      by: price                    # price | latency | least_busy
      candidates: [small, medium, large]   # the pool, in preference order (ties go to the first)
      quality: {small: 0.62, medium: 0.78, large: 0.91}   # your own eval scores, 0..1
      quality_floor: 0.75          # only candidates scoring at least this are considered
      expected_tokens: {input: 800, output: 300}   # what a request costs, for ``by: price``
      skip_open_breakers: true     # leave out candidates whose circuit breaker is open (default)
      cacheable: false             # put the choice in the per-key decision cache? (default no)

``decide`` keeps the pool candidates that pass the quality floor (``quality[c] >= quality_floor``;
a candidate missing from ``quality`` has no score and passes only a floor of 0) and, with
``skip_open_breakers``, whose breaker is not ``open`` (a ``half_open`` breaker stays in: its probe
call is how it gets back). Among those it picks the lowest value of ``by``:

``price``       ``(input * price_input_per_1k + output * price_output_per_1k) / 1000`` with
                the ``expected_tokens`` and the candidates' configured prices (USD per request).
``latency``     the dispatcher's EWMA of successful call latency (seconds). A candidate without
                a successful call yet counts as **0**, so it is tried first (explore before
                exploit); a candidate that only fails never gets a sample, so keep
                ``skip_open_breakers`` on: its breaker opens and it drops out.
``least_busy``  the dispatcher's calls in flight to the candidate right now.

Ties go to the candidate listed first in ``candidates``. The live numbers come from the worker's
dispatcher through ``RoutingContext.stats`` (:mod:`router_stream.providers.stats`); they are per
worker process and start empty. Without them (``ctx.stats`` is None: tests, offline tools)
``latency`` and ``least_busy`` take the first passing candidate in pool order and say so in the
reason, and breakers are not checked. When no candidate passes, the strategy abstains with the
reason in the audit (the next strategy, or the default, decides).

``Decision.detail`` shows why: ``{"by", "values": {candidate: value, ...}}`` for the candidates
compared, ``"excluded": {candidate: why}`` for the ones filtered out, and for ``latency`` the
``"unsampled"`` candidates that counted as 0.

Latency and load change from one request to the next, so these decisions are not cached by
default (``cacheable: false``): a cached one would pin a key to whoever was fastest when it was
first seen. A ``price`` choice only changes with the config and may be made sticky with
``cacheable: true`` (and, like every strategy, ``cache: {ttl_s: ...}`` sets how long it sticks;
``cache: {enabled: false}`` overrides ``cacheable: true``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..providers.pricing import Prices, cost_usd
from ..schemas import Request
from .base import Decision, RoutingContext
from .strategy_config import BuildContext, StrategyConfigBase


class ExpectedTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: int = Field(1000, ge=0)
    output: int = Field(1000, ge=0)


class OptimizeConfig(StrategyConfigBase):
    type: Literal["optimize"]
    name: str = "optimize"
    by: Literal["price", "latency", "least_busy"]
    candidates: list[str] = Field(min_length=1, description="the pool, in tie-break order")
    quality: dict[str, float] = Field(
        default_factory=dict, description="per-candidate quality score in [0, 1]"
    )
    quality_floor: float = Field(0.0, ge=0.0, le=1.0)
    skip_open_breakers: bool = True
    expected_tokens: ExpectedTokens = Field(default_factory=ExpectedTokens)
    cacheable: bool = False

    @field_validator("candidates")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted(name for name, n in Counter(v).items() if n > 1)
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return v

    @field_validator("quality")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [f"{name}={score!r}" for name, score in v.items() if not (0.0 <= score <= 1.0)]
        if bad:
            raise ValueError(f"scores must be in [0, 1] ({', '.join(bad)})")
        return v

    def referenced_candidates(self) -> list[tuple[str, str]]:
        refs = [(f".candidates[{i}]", name) for i, name in enumerate(self.candidates)]
        refs += [(f".quality.{name}", name) for name in self.quality]
        return refs

    def always_decides(self) -> str | None:
        """None: it abstains when no candidate passes the quality floor or all breakers are open."""
        return None

    def build(self, ctx: BuildContext) -> OptimizeStrategy:
        return OptimizeStrategy(self, ctx.prices())


class OptimizeStrategy:
    """Filters the pool by quality floor (and open breakers), then takes the minimum of ``by``."""

    def __init__(self, config: OptimizeConfig, prices: dict[str, tuple[float, float]] | None = None) -> None:
        unpriced = [name for name in config.candidates if name not in (prices or {})]
        if config.by == "price" and unpriced:
            raise ValueError(
                f"strategy {config.name!r}: by: price needs the prices of {', '.join(unpriced)} "
                "(build it with the candidates in its BuildContext, or pass prices)"
            )
        self.name = config.name
        self.by = config.by
        self.pool = tuple(config.candidates)
        self.quality = dict(config.quality)
        self.floor = config.quality_floor
        self.skip_open_breakers = config.skip_open_breakers
        self.cacheable = config.cacheable
        self.expected = config.expected_tokens
        self.prices: dict[str, float] = {}
        if prices is not None:
            tin, tout = self.expected.input, self.expected.output
            for name in self.pool:
                self.prices[name] = cost_usd(Prices(*prices.get(name, (0.0, 0.0))), tin, tout)

    def _filter(self, ctx: RoutingContext) -> tuple[list[str], dict[str, str]]:
        excluded: dict[str, str] = {}
        states: dict[str, str] = {}
        if self.skip_open_breakers and ctx.stats is not None:
            get_states = getattr(ctx.stats, "breaker_states", None)
            states = get_states() if get_states is not None else {}
        passing = []
        for name in self.pool:
            score = self.quality.get(name)
            if self.floor > 0 and (score is None or score < self.floor):
                excluded[name] = (
                    "no quality score" if score is None else f"quality {score:g} < floor {self.floor:g}"
                )
            elif states.get(name) == "open":
                excluded[name] = "breaker open"
            else:
                passing.append(name)
        return passing, excluded

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        passing, excluded = self._filter(ctx)
        detail: dict[str, Any] = {"by": self.by}
        if excluded:
            detail["excluded"] = excluded
        if not passing:
            why = "; ".join(f"{name}: {text}" for name, text in excluded.items())
            ctx.explain(f"no candidate passes (floor {self.floor:g}): {why}")
            return None

        if self.by != "price" and ctx.stats is None:
            chosen = passing[0]
            detail["values"] = {}
            return Decision(
                chosen,
                reason=f"no live stats (outside a worker): {self.by} unknown, "
                f"first passing candidate in pool order ({chosen!r})",
                detail=detail,
                cacheable=self.cacheable,
            )

        values: dict[str, float] = {}
        stats = ctx.stats
        if self.by == "price":
            values = {name: self.prices[name] for name in passing}
            unit = "USD/request"
        elif self.by == "latency":
            assert stats is not None  # returned above: only ``by: price`` runs without stats
            unsampled = []
            for name in passing:
                ewma = stats.snapshot(name).ewma_latency_s
                if ewma is None:
                    unsampled.append(name)
                values[name] = 0.0 if ewma is None else float(ewma)
            if unsampled:
                detail["unsampled"] = unsampled
            unit = "s EWMA"
        else:
            assert stats is not None  # returned above: only ``by: price`` runs without stats
            values = {name: int(stats.snapshot(name).in_flight) for name in passing}
            unit = "in flight"
        # min() keeps the first of equal values: ties go to pool order
        chosen = min(passing, key=values.__getitem__)
        detail["values"] = {name: (round(v, 6) if isinstance(v, float) else v) for name, v in values.items()}
        note = (
            " (no samples yet: explored first)"
            if self.by == "latency" and chosen in detail.get("unsampled", ())
            else ""
        )
        reason = (
            f"lowest {self.by} among {len(passing)} passing: {chosen!r} ({values[chosen]:.6g} {unit}){note}"
        )
        return Decision(chosen, reason=reason, detail=detail, cacheable=self.cacheable)
