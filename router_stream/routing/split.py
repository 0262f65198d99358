"""Weighted split (A/B test, canary) by cache-scope key, with an optional time ramp.

Example::

    - type: split
      name: canary
      salt: canary-2026-12       # default: the strategy's name; change it to reshuffle keys
      weights: {cheap: 90, smart: 10}
      sticky: true               # decisions go to the per-key decision cache (default)
      ramp:                      # optional: move share from one arm to another over time
        from: cheap
        to: smart
        start: 2026-12-01T00:00:00Z   # ISO 8601 (no zone = UTC) or epoch milliseconds
        end: 1796688000000
        share: 1.0               # fraction of from's weight moved by ``end`` (default all)

Each key falls in a fixed bucket ``stable_fraction(salt, key)`` in [0, 1); the arms take
consecutive slices of [0, 1) in proportion to their weights, so a key stays in its arm as long
as the weights (and the salt) stay. Weights need not add up to 1 or 100, only to more than 0.

A ramp moves ``share`` of ``from``'s weight to ``to`` linearly between ``start`` and ``end``
(before: none of it, after: all of it), by the time the worker reads the request
(``ctx.now_ms``, not the record's producer timestamp, so a replayed backlog follows the ramp as
it is now). It hands over the top part of ``from``'s slice, whatever the arms' order, so adding a
ramp moves no key before ``start``, and while it runs keys only ever move from ``from`` to
``to``: never back, and no other arm's keys move. With ``sticky: true`` a key that
was decided before keeps its cached arm until ``cache.ttl_s`` passes; set ``sticky: false`` to
follow a ramp exactly (the split is deterministic anyway, the cache only freezes it).

``Decision.detail`` holds ``{"arm": ..., "bucket": ...}`` (plus ``"ramp": progress`` in [0, 1]
when a ramp is configured) for the audit.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..schemas import Request, now_ms
from .base import Decision, RoutingContext, stable_fraction
from .strategy_config import BuildContext, StrategyConfigBase

#: epoch values below this are taken for seconds, not milliseconds (1973-03-03 in ms)
_MIN_EPOCH_MS = 100_000_000_000


def to_epoch_ms(value: Any) -> int:
    """An ISO 8601 timestamp (no zone = UTC), a ``datetime``/``date`` or epoch ms, as epoch ms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < _MIN_EPOCH_MS:
            raise ValueError(f"{value!r} is not epoch milliseconds (seconds? multiply by 1000)")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_epoch_ms(int(text))
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither an ISO 8601 timestamp nor epoch milliseconds") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time.min)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    raise ValueError(f"{value!r} is not a timestamp")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RampConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    start: int
    end: int
    share: float = Field(1.0, gt=0, le=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _timestamp(cls, v: Any) -> int:
        return to_epoch_ms(v)

    @model_validator(mode="after")
    def _order(self) -> RampConfig:
        if self.end <= self.start:
            raise ValueError(f"end ({_iso(self.end)}) must be after start ({_iso(self.start)})")
        if self.from_ == self.to:
            raise ValueError(f"from and to are the same candidate ({self.to!r})")
        return self

    def progress(self, at_ms: int) -> float:
        """0 before ``start``, 1 after ``end``, linear in between."""
        if at_ms <= self.start:
            return 0.0
        if at_ms >= self.end:
            return 1.0
        return (at_ms - self.start) / (self.end - self.start)


class SplitConfig(StrategyConfigBase):
    type: Literal["split"]
    name: str = "split"
    salt: str | None = Field(None, description="hash salt; default the strategy name")
    weights: dict[str, Weight] = Field(min_length=1)
    sticky: bool = True
    ramp: RampConfig | None = None

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if sum(v.values()) <= 0:
            raise ValueError("weights must add up to more than 0")
        return v

    @model_validator(mode="after")
    def _ramp_has_weight(self) -> SplitConfig:
        if self.ramp is not None and self.weights.get(self.ramp.from_, 0) <= 0:
            raise ValueError(f"ramp.from {self.ramp.from_!r} has no weight to move (give it one in weights)")
        return self

    def referenced_candidates(self) -> list[tuple[str, str]]:
        refs = [(f".weights.{name}", name) for name in self.weights]
        if self.ramp is not None:
            refs += [(".ramp.from", self.ramp.from_), (".ramp.to", self.ramp.to)]
        return refs

    def always_decides(self) -> str | None:
        """A split sends every key to one of its arms (its weights add up to more than 0)."""
        return "a split sends every key to one of its arms"

    def build(self, ctx: BuildContext) -> SplitStrategy:
        return SplitStrategy(self)


class SplitStrategy:
    """Always decides (weights add up to more than 0): the arm whose slice holds the key's bucket."""

    def __init__(self, config: SplitConfig) -> None:
        self.name = config.name
        self.salt = config.salt if config.salt is not None else config.name
        self.sticky = config.sticky
        self.ramp = config.ramp
        self.weights = dict(config.weights)  # configured order: adding a ramp must move no key by itself
        self._total = sum(self.weights.values())

    def moved_fraction(self, at_ms: int) -> float:
        """The fraction of ``from``'s slice that the ramp has handed to ``to`` at ``at_ms``."""
        return 0.0 if self.ramp is None else self.ramp.share * self.ramp.progress(at_ms)

    def weights_at(self, at_ms: int) -> dict[str, float]:
        """The arms' effective weights at ``at_ms`` (the configured ones unless a ramp moves some)."""
        if self.ramp is None:
            return self.weights
        moved = self.weights[self.ramp.from_] * self.moved_fraction(at_ms)
        weights = dict(self.weights)
        weights[self.ramp.from_] -= moved
        weights[self.ramp.to] = weights.get(self.ramp.to, 0.0) + moved
        return weights

    def arm(self, bucket: float, moved: float = 0.0) -> str:
        """The arm of a key in ``bucket``; ``moved``: the ramp's :meth:`moved_fraction`.

        The arms take consecutive slices of [0, 1) in configured order. A ramp hands over the
        *top* ``moved`` part of ``from``'s slice to ``to``, wherever ``to``'s own slice is, so as
        it progresses keys only move from ``from`` to ``to`` and no other key changes arm.
        """
        point = bucket * self._total
        acc = 0.0
        last = None
        for name, weight in self.weights.items():
            if weight <= 0:
                continue
            start, acc, last = acc, acc + weight, name
            if point < acc:
                if (
                    self.ramp is not None
                    and name == self.ramp.from_
                    and moved > 0
                    and (point - start) / weight >= 1.0 - moved
                ):
                    return self.ramp.to
                return name
        assert last is not None  # the config guarantees a positive total
        return last  # float rounding at the very top of [0, 1)

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        bucket = stable_fraction(self.salt, ctx.key)
        detail: dict[str, Any] = {"bucket": round(bucket, 6)}
        moved = 0.0
        if self.ramp is not None:
            at = ctx.now_ms or now_ms()
            moved = self.moved_fraction(at)
            detail["ramp"] = round(self.ramp.progress(at), 4)
        arm = self.arm(bucket, moved)
        detail = {"arm": arm, **detail}
        return Decision(
            arm, reason=f"bucket {bucket:.4f} is in arm {arm!r}", detail=detail, cacheable=self.sticky
        )
