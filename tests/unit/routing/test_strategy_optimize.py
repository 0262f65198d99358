"""The optimize strategy (price / latency / least busy over a quality floor) and the live stats behind it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.providers.resilience import Dispatcher
from router_stream.providers.stats import CandidateSnapshot, CandidateStats, StatsView
from router_stream.routing.base import RoutingContext
from router_stream.routing.optimize import OptimizeConfig, OptimizeStrategy
from router_stream.routing.strategy_config import BuildContext
from router_stream.runtime import build_context, build_pipeline
from router_stream.schemas import Request
from router_stream_dev.model_server import ModelServer

PRICES = {  # (input, output) USD per 1k tokens
    "small": (0.1, 0.4),
    "medium": (0.5, 1.5),
    "large": (3.0, 15.0),
}
CANDIDATES = {
    name: {
        "base_url": "http://127.0.0.1:9/v1",
        "model": name,
        "price_input_per_1k": pin,
        "price_output_per_1k": pout,
    }
    for name, (pin, pout) in PRICES.items()
}
NAMES = tuple(CANDIDATES)
REQ = Request(request_id="r1", prompt="hi")
QUALITY = {"small": 0.6, "medium": 0.8, "large": 0.95}


def config(**cfg: Any) -> dict[str, Any]:
    return {
        "candidates": CANDIDATES,
        "default": "small",
        "strategies": [{"type": "optimize", "candidates": list(NAMES), **cfg}],
    }


def strategy(**cfg: Any) -> OptimizeStrategy:
    rc = parse_config(config(**cfg), environ={})
    return rc.strategies[0].build(build_context(rc))


def ctx(stats: Any = None) -> RoutingContext:
    return RoutingContext(key="k", candidates=NAMES, stats=stats)


class FakeStats:
    """Duck-types StatsView: snapshot(name) and breaker_states()."""

    def __init__(
        self,
        ewma: dict[str, float] | None = None,
        in_flight: dict[str, int] | None = None,
        breakers: dict[str, str] | None = None,
    ) -> None:
        self.ewma = ewma or {}
        self.inflight = in_flight or {}
        self.breakers = breakers or {}

    def snapshot(self, name: str) -> CandidateSnapshot:
        return CandidateSnapshot(
            name, self.ewma.get(name), self.inflight.get(name, 0), 1 if name in self.ewma else 0, None
        )

    def breaker_states(self) -> dict[str, str]:
        return dict(self.breakers)


def config_error(**cfg: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(config(**cfg), environ={})
    return str(info.value)


# ---------------------------------------------------------------- CandidateStats
def test_candidate_stats_ewma_in_flight_and_snapshot():
    now = [100.0]
    stats = CandidateStats(["a", "b"], alpha=0.5, clock=lambda: now[0])
    assert stats.snapshot("a") == CandidateSnapshot("a")  # nothing yet
    assert stats.snapshot("never-configured") == CandidateSnapshot("never-configured")

    stats.record_latency("a", 1.0)  # first sample starts the average
    assert stats.snapshot("a").ewma_latency_s == pytest.approx(1.0)
    now[0] = 101.0
    stats.record_latency("a", 2.0)  # 0.5 * 2 + 0.5 * 1
    snap = stats.snapshot("a")
    assert snap.ewma_latency_s == pytest.approx(1.5) and snap.samples == 2 and snap.updated_at == 101.0
    stats.record_latency("a", float("nan"))  # ignored
    stats.record_latency("a", -1.0)  # ignored
    assert stats.snapshot("a").samples == 2

    stats.call_started("b")
    stats.call_started("b")
    assert stats.in_flight("b") == 2
    stats.call_ended("b")
    stats.call_ended("b")
    stats.call_ended("b")  # an unpaired end never goes below 0
    assert stats.in_flight("b") == 0
    assert stats.snapshot("b").ewma_latency_s is None  # calls ended without a success sample

    default = CandidateStats()
    default.record_latency("x", 1.0)
    default.record_latency("x", 2.0)
    assert default.ewma_latency_s("x") == pytest.approx(0.2 * 2.0 + 0.8 * 1.0)  # default alpha 0.2

    with pytest.raises(ValueError, match="alpha"):
        CandidateStats(alpha=0)

    view = StatsView(stats, lambda: {"a": "open"})
    assert view.snapshot("a") == stats.snapshot("a")
    assert view.breaker_states() == {"a": "open"}
    assert not hasattr(view, "record_latency") and not hasattr(view, "call_started")
    with pytest.raises(AttributeError):
        view.x = 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the strategy
async def test_price_pick_respects_the_quality_floor():
    s = strategy(
        by="price", quality=QUALITY, quality_floor=0.75, expected_tokens={"input": 1000, "output": 500}
    )
    d = await s.decide(REQ, ctx())
    assert d.candidate == "medium"  # small is cheaper but below the floor
    assert d.detail["by"] == "price"
    assert d.detail["values"] == {"medium": pytest.approx(0.5 + 0.75), "large": pytest.approx(3.0 + 7.5)}
    assert d.detail["excluded"] == {"small": "quality 0.6 < floor 0.75"}
    assert d.cacheable is False
    # no floor: the cheapest of all; price needs no live stats
    d = await strategy(by="price", quality=QUALITY, cacheable=True).decide(REQ, ctx())
    assert d.candidate == "small" and d.cacheable is True
    # sticky in the pipeline, with the per-strategy TTL
    rc = parse_config(config(by="price", cacheable=True, cache={"ttl_s": 60}), environ={})
    routed = await build_pipeline(rc).route(REQ, ctx())
    assert routed.candidate == "small" and routed.cacheable is True and routed.ttl_s == 60
    rc = parse_config(config(by="latency"), environ={})
    assert (await build_pipeline(rc).route(REQ, ctx(FakeStats()))).cacheable is False


async def test_price_ties_go_to_pool_order_and_missing_quality_fails_a_floor():
    s = OptimizeStrategy(
        OptimizeConfig(
            type="optimize",
            by="price",
            candidates=["b", "a", "c"],
            quality={"a": 0.9, "b": 0.9},
            quality_floor=0.5,
        ),
        prices={"a": (1.0, 1.0), "b": (1.0, 1.0), "c": (0.0, 0.0)},
    )
    d = await s.decide(REQ, ctx())
    assert d.candidate == "b"  # a and b tie; b is listed first; c (free) has no quality score
    assert d.detail["excluded"] == {"c": "no quality score"}


async def test_latency_pick_from_stats_and_unsampled_explored_first():
    s = strategy(by="latency", quality=QUALITY, quality_floor=0.5)
    stats = CandidateStats(NAMES)
    for latency in (0.30, 0.32):
        stats.record_latency("small", latency)
    stats.record_latency("medium", 0.12)
    # large has no sample yet: counts as 0, tried first
    d = await s.decide(REQ, ctx(StatsView(stats)))
    assert d.candidate == "large"
    assert d.detail["unsampled"] == ["large"] and "explored first" in d.reason
    stats.record_latency("large", 0.9)
    d = await s.decide(REQ, ctx(StatsView(stats)))
    assert d.candidate == "medium"
    assert d.detail["by"] == "latency"
    assert d.detail["values"] == {"small": pytest.approx(0.304), "medium": 0.12, "large": 0.9}
    assert d.cacheable is False
    # the same with a fake stats object
    d = await s.decide(REQ, ctx(FakeStats(ewma={"small": 0.2, "medium": 0.5, "large": 0.1})))
    assert d.candidate == "large"


async def test_least_busy_by_in_flight_counts():
    s = strategy(by="least_busy")
    d = await s.decide(REQ, ctx(FakeStats(in_flight={"small": 7, "medium": 2, "large": 3})))
    assert d.candidate == "medium"
    assert d.detail["values"] == {"small": 7, "medium": 2, "large": 3}
    d = await s.decide(REQ, ctx(FakeStats(in_flight={"small": 2, "medium": 2, "large": 3})))
    assert d.candidate == "small"  # tie: pool order


async def test_open_breaker_is_skipped_half_open_is_not():
    s = strategy(by="least_busy")
    busy = {"small": 0, "medium": 1, "large": 5}
    d = await s.decide(REQ, ctx(FakeStats(in_flight=busy, breakers={"small": "open", "medium": "closed"})))
    assert d.candidate == "medium"
    assert d.detail["excluded"] == {"small": "breaker open"}
    d = await s.decide(REQ, ctx(FakeStats(in_flight=busy, breakers={"small": "half_open"})))
    assert d.candidate == "small"  # its probe is how it recovers
    off = strategy(by="least_busy", skip_open_breakers=False)
    d = await off.decide(REQ, ctx(FakeStats(in_flight=busy, breakers={"small": "open"})))
    assert d.candidate == "small"


async def test_no_stats_falls_back_to_pool_order_with_reason():
    for by in ("latency", "least_busy"):
        s = strategy(by=by, quality=QUALITY, quality_floor=0.7)
        d = await s.decide(REQ, ctx(None))
        assert d.candidate == "medium"  # first in the pool passing the floor
        assert "no live stats" in d.reason and "pool order" in d.reason


async def test_nobody_passes_the_floor_abstains_with_reason():
    rc = parse_config(
        config(by="price", quality={"small": 0.2, "medium": 0.3}, quality_floor=0.9), environ={}
    )
    pipeline = build_pipeline(rc)
    routed = await pipeline.route(REQ, ctx())
    assert routed.decided_by == "default" and routed.candidate == "small"
    verdict = routed.verdicts[0]
    assert verdict.outcome == "abstained"
    assert "no candidate passes" in verdict.reason
    assert "small: quality 0.2 < floor 0.9" in verdict.reason and "large: no quality score" in verdict.reason
    # every passing candidate's breaker open: abstain too
    s = strategy(by="latency")
    c = ctx(FakeStats(breakers=dict.fromkeys(NAMES, "open")))
    assert await s.decide(REQ, c) is None
    assert "breaker open" in c.take_note()


def test_config_errors_name_the_field():
    msg = config_error(by="price", candidates=["small", "nope"])
    assert "strategies[0].candidates[1]" in msg and "'nope' is not a candidate" in msg
    msg = config_error(by="price", quality={"ghost": 0.5})
    assert "strategies[0].quality.ghost" in msg and "'ghost' is not a candidate" in msg
    msg = config_error(by="price", quality_floor=1.5)
    assert "strategies[0].quality_floor" in msg
    msg = config_error(by="price", quality_floor=-0.1)
    assert "strategies[0].quality_floor" in msg
    msg = config_error(by="price", quality={"small": 2.0})
    assert "strategies[0].quality" in msg and "small=2.0" in msg
    msg = config_error(by="fastest")
    assert "strategies[0].by" in msg
    msg = config_error(by="price", candidates=["small", "small"])
    assert "strategies[0].candidates" in msg and "more than once" in msg
    msg = config_error(by="price", expected_tokens={"input": -1})
    assert "strategies[0].expected_tokens.input" in msg
    with pytest.raises(ValueError, match="prices"):
        OptimizeConfig(type="optimize", by="price", candidates=["a"]).build(BuildContext())


# ---------------------------------------------------------------- a real dispatcher
async def test_real_dispatcher_records_ewma_and_in_flight():
    async with ModelServer(name="slow", latency_ms=150) as slow, ModelServer(name="fast") as fast:
        rc = parse_config(
            {
                "candidates": {
                    "slow": {"base_url": slow.base_url, "model": "s", "max_retries": 0},
                    "fast": {"base_url": fast.base_url, "model": "f", "max_retries": 0},
                },
                "default": "fast",
            },
            environ={},
        )
        d = Dispatcher(rc)
        try:
            stats = d.stats
            assert stats.snapshot("slow") == CandidateSnapshot("slow")
            calls = [
                asyncio.create_task(
                    d.call(Request(request_id=f"r{i}", prompt="x"), "slow", time.monotonic() + 5)
                )
                for i in range(4)
            ]
            peak = 0
            deadline = time.monotonic() + 2
            while not all(c.done() for c in calls) and time.monotonic() < deadline:
                peak = max(peak, stats.in_flight("slow"))
                await asyncio.sleep(0.01)
            results = await asyncio.gather(*calls)
            assert all(r.ok and r.served_by == "slow" for r in results)
            assert peak == 4  # all four were in flight at once
            snap = stats.snapshot("slow")
            assert snap.in_flight == 0 and snap.samples == 4
            assert 0.14 <= snap.ewma_latency_s < 1.0
            assert (await d.call(Request(request_id="f", prompt="x"), "fast", time.monotonic() + 5)).ok
            assert stats.snapshot("fast").ewma_latency_s < snap.ewma_latency_s
            assert stats.breaker_states() == {"slow": "closed", "fast": "closed"}

            # the strategy, given the dispatcher's view, now prefers the faster one
            s = OptimizeConfig(type="optimize", by="latency", candidates=["slow", "fast"]).build(
                build_context(rc)
            )
            decision = await s.decide(REQ, RoutingContext(key="k", candidates=("slow", "fast"), stats=stats))
            assert decision.candidate == "fast"
        finally:
            await d.aclose()


async def test_failed_call_ends_in_flight_without_a_latency_sample():
    async with ModelServer(name="bad", error_rate=1.0) as bad:
        rc = parse_config(
            {
                "candidates": {"bad": {"base_url": bad.base_url, "model": "b", "max_retries": 0}},
                "default": "bad",
            },
            environ={},
        )
        d = Dispatcher(rc)
        try:
            result = await d.call(Request(request_id="r", prompt="x"), "bad", time.monotonic() + 5)
            assert not result.ok
            snap = d.stats.snapshot("bad")
            assert snap.in_flight == 0 and snap.samples == 0 and snap.ewma_latency_s is None
        finally:
            await d.aclose()
