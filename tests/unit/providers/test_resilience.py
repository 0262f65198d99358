"""The dispatcher over real HTTP: retries, fallbacks, breakers, rate limits, context, deadlines."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest

from router_stream.config import RouterConfig
from router_stream.config_candidates import BreakerConfig, RateLimitConfig
from router_stream.errors import RoutingMiss
from router_stream.providers.base import ChatCall, Completion
from router_stream.providers.breaker import CircuitBreaker
from router_stream.providers.call_result import CallResult
from router_stream.providers.dispatch_hooks import DispatchObserver
from router_stream.providers.ratelimit import RateLimiter
from router_stream.providers.resilience import Dispatcher
from router_stream.schemas import Request, Usage
from router_stream_dev.model_server import ModelServer

KEY = "sk-resilience-secret-42"


class Recorder(DispatchObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_attempt(self, candidate, outcome, latency_s, error_kind):
        self.events.append(("attempt", candidate, outcome, error_kind))

    def on_retry(self, candidate):
        self.events.append(("retry", candidate))

    def on_fallback(self, from_, to):
        self.events.append(("fallback", from_, to))

    def on_breaker(self, candidate, state):
        self.events.append(("breaker", candidate, state))

    def on_rate_limit_wait(self, candidate, seconds):
        self.events.append(("wait", candidate, seconds))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


@pytest.fixture
async def servers(monkeypatch):
    monkeypatch.setenv("RS_KEY", KEY)
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(ModelServer(name, provider_model=f"{name}-v1", api_key=KEY))
            for name in ("cheap", "smart", "backup")
        }


def make_config(servers: dict[str, ModelServer], fallbacks=("smart",), **per: dict[str, Any]) -> RouterConfig:
    candidates = {}
    for name, srv in servers.items():
        candidates[name] = {
            "base_url": srv.base_url,
            "model": f"{name}-model",
            "api_key_env": "RS_KEY",
            "request_timeout_ms": 1000,
            "max_retries": 2,
            "price_input_per_1k": 1.0,
            "price_output_per_1k": 2.0,
            **per.get(name, {}),
        }
    return RouterConfig.model_validate(
        {"candidates": candidates, "default": "cheap", "fallbacks": list(fallbacks)}
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_dispatcher(recorder):
    made: list[Dispatcher] = []

    def make(config: RouterConfig, **kw: Any) -> Dispatcher:
        d = Dispatcher(config, observer=recorder, backoff_initial_s=0.01, backoff_max_s=0.05, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.aclose()


def req(text: str = "hello there, route me", **kw: Any) -> Request:
    return Request(request_id="r-1", prompt=text, **kw)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def outcomes(result: CallResult) -> list[tuple[str, str, str | None, int]]:
    return [(a.candidate, a.outcome, a.error_kind, a.retry) for a in result.attempts]


async def test_chain_order_and_dedup(servers, make_dispatcher):
    config = make_config(
        servers, fallbacks=("smart", "cheap", "backup"), cheap={"fallbacks": ["backup", "smart"]}
    )
    d = make_dispatcher(config)
    assert d.chain_for("cheap") == ["cheap", "backup", "smart"]
    assert d.chain_for("smart") == ["smart", "cheap", "backup"]
    with pytest.raises(RoutingMiss):
        d.chain_for("nope")


async def test_success_on_chosen(servers, make_dispatcher, recorder):
    d = make_dispatcher(make_config(servers))
    result = await d.call(req(), "cheap", soon())
    assert result.ok and result.served_by == "cheap" and result.error is None
    assert result.completion.text.startswith("[cheap] answer to: hello there")
    assert result.completion.provider_model == "cheap-v1"
    assert outcomes(result) == [("cheap", "ok", None, 0)]
    assert result.attempts[0].status == 200
    u = result.completion.usage
    assert result.cost_usd == pytest.approx((u.prompt_tokens * 1.0 + u.completion_tokens * 2.0) / 1000)
    assert servers["cheap"].stats()["auth_present"] == 1
    assert recorder.of("attempt") == [("attempt", "cheap", "ok", None)]


async def test_retries_then_success(servers, make_dispatcher, recorder):
    servers["cheap"].set_faults(retry_after=None)
    servers["cheap"].script("503", "reset")
    d = make_dispatcher(make_config(servers))
    result = await d.call(req(), "cheap", soon())
    assert result.served_by == "cheap"
    assert outcomes(result) == [
        ("cheap", "error", "server_error", 0),
        ("cheap", "error", "connection", 1),
        ("cheap", "ok", None, 2),
    ]
    assert result.attempts[0].status == 503
    assert len(recorder.of("retry")) == 2 and not recorder.of("fallback")


async def test_retry_after_is_honoured(servers, make_dispatcher):
    servers["cheap"].set_faults(retry_after=0.3)
    servers["cheap"].script("429")
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        await asyncio.sleep(s)

    d = make_dispatcher(make_config(servers), sleep=sleep)
    t0 = time.monotonic()
    result = await d.call(req(), "cheap", soon())
    assert result.served_by == "cheap"
    assert outcomes(result) == [("cheap", "error", "throttled", 0), ("cheap", "ok", None, 1)]
    assert slept and slept[0] >= 0.3  # backoff alone would be <= 0.05
    assert time.monotonic() - t0 >= 0.29


async def test_retry_after_past_deadline_falls_back_at_once(servers, make_dispatcher):
    servers["cheap"].set_faults(faults={"429": 1.0}, retry_after=30)
    d = make_dispatcher(make_config(servers))
    t0 = time.monotonic()
    result = await d.call(req(), "cheap", soon(3))
    assert result.served_by == "smart"
    assert outcomes(result)[0] == ("cheap", "error", "throttled", 0)
    assert time.monotonic() - t0 < 1.5


async def test_no_retry_on_400(servers, make_dispatcher, recorder):
    servers["cheap"].set_faults(faults={"400": 1.0})
    d = make_dispatcher(make_config(servers, fallbacks=()))
    result = await d.call(req(), "cheap", soon())
    assert not result.ok and result.completion is None and result.served_by is None
    assert outcomes(result) == [("cheap", "error", "client_error", 0)]
    assert result.error_kind == "client_error"
    assert result.error == "all candidates failed: cheap: HTTP 400 from model endpoint"
    assert servers["cheap"].stats()["calls"] == 1 and not recorder.of("retry")
    assert d.breaker_states()["cheap"] == "closed"


async def test_fallback_when_primary_always_503(servers, make_dispatcher, recorder):
    servers["cheap"].set_faults(faults={"503": 1.0}, retry_after=None)
    d = make_dispatcher(make_config(servers, cheap={"max_retries": 1}))
    result = await d.call(req(), "cheap", soon())
    assert result.served_by == "smart" and result.completion.text.startswith("[smart]")
    assert outcomes(result) == [
        ("cheap", "error", "server_error", 0),
        ("cheap", "error", "server_error", 1),
        ("smart", "ok", None, 0),
    ]
    assert recorder.of("fallback") == [("fallback", "cheap", "smart")]
    assert servers["cheap"].stats()["calls"] == 2


async def test_whole_chain_fails_reports_each_candidate_without_secrets(servers, make_dispatcher):
    servers["cheap"].set_faults(faults={"503": 1.0}, retry_after=None)
    servers["smart"].set_faults(faults={"reset": 1.0})
    d = make_dispatcher(make_config(servers, cheap={"max_retries": 0}, smart={"max_retries": 1}))
    result = await d.call(req(), "cheap", soon())
    assert result.completion is None and result.cost_usd == 0
    assert result.error_kind == "connection"
    assert "cheap: HTTP 503 from model endpoint" in result.error
    assert "smart: connection failed" in result.error and "after 2 attempts" in result.error
    assert KEY not in result.error and all(KEY not in (a.error or "") for a in result.attempts)


async def test_breaker_opens_then_half_opens(servers, make_dispatcher, recorder):
    servers["cheap"].set_faults(faults={"503": 1.0}, retry_after=None)
    breaker = {"failure_threshold": 2, "window_s": 10, "cooldown_s": 0.2}
    d = make_dispatcher(make_config(servers, cheap={"max_retries": 0, "breaker": breaker}))

    r1 = await d.call(req(), "cheap", soon())
    assert r1.served_by == "smart" and d.breaker_states()["cheap"] == "closed"
    r2 = await d.call(req(), "cheap", soon())
    assert r2.served_by == "smart" and d.breaker_states()["cheap"] == "open"
    r3 = await d.call(req(), "cheap", soon())
    assert outcomes(r3) == [("cheap", "skipped", "breaker_open", 0), ("smart", "ok", None, 0)]
    assert servers["cheap"].stats()["calls"] == 2  # the open breaker kept the call away

    await asyncio.sleep(0.25)
    assert d.breaker_states()["cheap"] == "half_open"
    r4 = await d.call(req(), "cheap", soon())  # the probe fails: open again
    assert outcomes(r4)[0] == ("cheap", "error", "server_error", 0)
    assert d.breaker_states()["cheap"] == "open"

    await asyncio.sleep(0.25)
    servers["cheap"].set_faults(faults={})
    r5 = await d.call(req(), "cheap", soon())  # the probe succeeds: closed
    assert r5.served_by == "cheap" and d.breaker_states()["cheap"] == "closed"
    states = [e[2] for e in recorder.of("breaker") if e[1] == "cheap"]
    assert states == ["open", "half_open", "open", "half_open", "closed"]


async def test_half_open_admits_a_single_probe(servers, make_dispatcher):
    servers["cheap"].set_faults(faults={"503": 1.0}, retry_after=None)
    breaker = {"failure_threshold": 1, "window_s": 10, "cooldown_s": 0.1}
    d = make_dispatcher(make_config(servers, cheap={"max_retries": 0, "breaker": breaker}))
    await d.call(req(), "cheap", soon())
    assert d.breaker_states()["cheap"] == "open"
    await asyncio.sleep(0.15)
    servers["cheap"].set_faults(faults={}, latency_ms=150)
    results = await asyncio.gather(*(d.call(req(), "cheap", soon()) for _ in range(3)))
    served = sorted(r.served_by for r in results)
    assert served == ["cheap", "smart", "smart"]
    assert d.breaker_states()["cheap"] == "closed"


async def test_rate_limit_falls_back(servers, make_dispatcher):
    d = make_dispatcher(
        make_config(servers, cheap={"rate_limit": {"requests_per_minute": 1, "max_wait_ms": 50}})
    )
    first = await d.call(req(), "cheap", soon())
    assert first.served_by == "cheap"
    t0 = time.monotonic()
    second = await d.call(req(), "cheap", soon())
    assert outcomes(second) == [("cheap", "skipped", "rate_limited", 0), ("smart", "ok", None, 0)]
    assert time.monotonic() - t0 < 1.0
    assert servers["cheap"].stats()["calls"] == 1


async def test_rate_limit_waits_within_max_wait(servers, make_dispatcher, recorder):
    # 6000 tokens/min = 100/s; each prompt books 3010 tokens: the second call waits ~0.2-0.3 s
    text = "x" * 12_024
    d = make_dispatcher(
        make_config(servers, cheap={"rate_limit": {"tokens_per_minute": 6000, "max_wait_ms": 1500}})
    )
    assert (await d.call(req(text), "cheap", soon())).served_by == "cheap"
    second = await d.call(req(text), "cheap", soon())
    assert second.served_by == "cheap"
    waits = recorder.of("wait")
    assert len(waits) == 1 and 0.1 < waits[0][2] < 1.0


async def test_context_window_skip(servers, make_dispatcher):
    d = make_dispatcher(make_config(servers, cheap={"context_window": 50}))
    result = await d.call(req("y" * 400), "cheap", soon())
    assert outcomes(result) == [("cheap", "skipped", "context_window", 0), ("smart", "ok", None, 0)]
    assert servers["cheap"].stats()["calls"] == 0
    short = await d.call(req("short"), "cheap", soon())
    assert short.served_by == "cheap"


async def test_every_candidate_too_small(servers, make_dispatcher):
    d = make_dispatcher(make_config(servers, cheap={"context_window": 10}, smart={"context_window": 10}))
    result = await d.call(req("z" * 400), "cheap", soon())
    assert not result.ok and result.error_kind == "context_window"
    assert [a.outcome for a in result.attempts] == ["skipped", "skipped"]


async def test_deadline_stops_attempts(servers, make_dispatcher):
    servers["cheap"].set_faults(faults={"timeout": 1.0})
    d = make_dispatcher(make_config(servers, cheap={"request_timeout_ms": 5000}))
    t0 = time.monotonic()
    result = await d.call(req(), "cheap", t0 + 0.3)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.5
    assert not result.ok and result.error_kind == "deadline_exceeded"
    assert outcomes(result) == [
        ("cheap", "error", "deadline_exceeded", 0),
        ("smart", "skipped", "deadline_exceeded", 0),
    ]
    assert servers["smart"].stats()["calls"] == 0


async def test_deadline_already_passed(servers, make_dispatcher):
    d = make_dispatcher(make_config(servers))
    result = await d.call(req(), "cheap", time.monotonic() - 1)
    assert outcomes(result) == [("cheap", "skipped", "deadline_exceeded", 0)]
    assert servers["cheap"].stats()["calls"] == 0


async def test_backoff_never_sleeps_past_deadline(servers, make_dispatcher):
    servers["cheap"].set_faults(faults={"503": 1.0}, retry_after=None)
    d = Dispatcher(
        make_config(servers, fallbacks=(), cheap={"max_retries": 10}),
        backoff_initial_s=1.0,
        backoff_max_s=2.0,
    )  # the first backoff (>= 0.5 s) would cross it
    try:
        t0 = time.monotonic()
        result = await d.call(req(), "cheap", t0 + 0.3)
        assert time.monotonic() - t0 < 0.3
        assert not result.ok
    finally:
        await d.aclose()


class _Broken:
    async def complete(self, call: ChatCall) -> Completion:
        raise ZeroDivisionError("bug")

    async def aclose(self) -> None:
        pass


class _Fixed:
    def __init__(self) -> None:
        self.calls: list[ChatCall] = []

    async def complete(self, call: ChatCall) -> Completion:
        self.calls.append(call)
        return Completion(
            text="fixed",
            provider_model="f",
            usage=Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500),
            latency_ms=1.0,
        )

    async def aclose(self) -> None:
        pass


async def test_injected_clients_and_client_bugs(servers):
    fixed = _Fixed()

    class Boom(DispatchObserver):
        def on_attempt(self, *a):
            raise RuntimeError("observer bug")

    d = Dispatcher(make_config(servers), clients={"cheap": _Broken(), "smart": fixed}, observer=Boom())
    try:
        result = await d.call(req(params={"temperature": 0}), "cheap", soon())
        assert result.served_by == "smart"
        assert outcomes(result) == [("cheap", "error", "internal", 0), ("smart", "ok", None, 0)]
        assert result.cost_usd == pytest.approx(1.0 + 1.0)
        assert fixed.calls[0].params == {"temperature": 0} and 0 < fixed.calls[0].timeout_s <= 1.0
        assert servers["backup"].stats()["calls"] == 0
    finally:
        await d.aclose()


def test_breaker_unit():
    now = [0.0]
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, window_s=10, cooldown_s=5), clock=lambda: now[0])
    b.record_failure()
    now[0] = 11
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"  # the first failure fell out of the window
    b.record_failure()
    assert b.state == "open" and not b.allow()
    now[0] = 16.5
    assert b.allow() and not b.allow()  # one probe only
    b.release()
    assert b.allow()
    b.record_success()
    assert b.state == "closed"


def test_rate_limiter_unit():
    now = [0.0]
    lim = RateLimiter(RateLimitConfig(requests_per_minute=60, tokens_per_minute=600), clock=lambda: now[0])
    assert lim.reserve(500, 0) == 0
    assert lim.reserve(200, 0) is None  # 100 left; 10 tokens/s
    wait = lim.reserve(200, 30)
    assert wait == pytest.approx(10.0)
    now[0] = 60
    lim.adjust_tokens(-100)
    assert lim.tokens.level == pytest.approx(600)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    import random

    from router_stream.providers.backoff import backoff_s

    rng = random.Random(7)
    for retry, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (12, 5.0)):
        waits = [backoff_s(retry, 0.2, 5.0, rng) for _ in range(200)]
        assert min(waits) >= ceiling / 2 and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not constant
    assert backoff_s(1, 0.2, 5.0, rng, retry_after=3.0) == 3.0  # Retry-After wins when longer
    assert backoff_s(6, 0.2, 5.0, rng, retry_after=0.01) >= 2.5  # and never shortens the backoff


async def test_connection_slots_are_fifo_and_a_queue_timeout_spares_the_breaker(
    servers, make_dispatcher, recorder
):
    """max_connections 2, 10 calls of 200 ms at once: the server never sees more than 2; calls are
    served in arrival order (none starves); calls that cannot get a slot in time end as
    queue_timeout, which neither opens the breaker nor counts as a failure of the endpoint."""
    servers["cheap"].set_faults(latency_ms=200)
    config = make_config(
        servers,
        fallbacks=(),
        cheap={
            "max_connections": 2,
            "max_retries": 0,
            "request_timeout_ms": 5000,
            "breaker": {"failure_threshold": 2, "window_s": 30},
        },
    )
    d = make_dispatcher(config)
    finished: list[int] = []

    async def one(i: int) -> CallResult:
        result = await d.call(Request(request_id=f"r-{i}", prompt=f"call {i}"), "cheap", soon(5))
        finished.append(i)
        return result

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0.005)  # arrival order 0, 1, 2, ...
    results = await asyncio.gather(*tasks)
    assert all(r.ok for r in results)
    assert servers["cheap"].stats()["max_in_flight"] <= 2
    assert finished == sorted(finished)  # FIFO: served in arrival order
    # now a deadline too short to wait for a slot behind 8 queued calls
    tasks = [
        asyncio.create_task(d.call(Request(request_id=f"q-{i}", prompt="x"), "cheap", soon(0.5)))
        for i in range(8)
    ]
    results = await asyncio.gather(*tasks)
    kinds = [r.error_kind for r in results if not r.ok]
    assert "queue_timeout" in kinds and set(kinds) <= {"queue_timeout", "deadline_exceeded"}
    assert sum(r.ok for r in results) >= 2
    assert d.breaker_states()["cheap"] == "closed"
    assert not recorder.of("breaker")


async def test_slot_wait_does_not_eat_the_request_timeout(servers, make_dispatcher):
    """request_timeout_ms bounds the HTTP exchange; the wait for a connection slot is bounded by
    the request's deadline instead (the third call waits ~600 ms for a slot, more than 500 ms)."""
    servers["cheap"].set_faults(latency_ms=300)
    config = make_config(
        servers, fallbacks=(), cheap={"max_connections": 1, "max_retries": 0, "request_timeout_ms": 500}
    )
    d = make_dispatcher(config)
    results = await asyncio.gather(
        *(d.call(Request(request_id=f"s-{i}", prompt="x"), "cheap", soon(5)) for i in range(3))
    )
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
