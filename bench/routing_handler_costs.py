"""The routing benchmark's second table: where a record's CPU goes inside the worker, by part.

For :mod:`bench.routing_overhead`: intake, routing, the handler without its model call, the
dispatcher around an instant in-process client, and the JSON of response and audit, each in CPU
µs per record (best of 3 chunks, after a warm-up). Unlike :mod:`bench.handler_cpu` (one total
for kafka-limit's budget), this splits the handler into its parts.
"""

from __future__ import annotations

import time
from typing import Any

from .common import RULES_STRATEGY, traffic
from .routing_strategies import CANDIDATES


class InstantClient:
    """A :class:`ModelClient` that answers at once, in process (no HTTP)."""

    async def complete(self, call: Any) -> Any:
        from router_stream.providers.base import Completion
        from router_stream.schemas import Usage

        return Completion(
            text="[bench] answer",
            provider_model="bench-model",
            usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17),
            latency_ms=0.01,
        )

    async def aclose(self) -> None:
        pass


class InstantDispatcher:
    """Answers at once, in process: the handler's cost without an HTTP call."""

    async def call(self, request: Any, chosen: str, deadline_at: float) -> Any:
        from router_stream.providers.base import Completion
        from router_stream.providers.call_result import CallResult
        from router_stream.schemas import Attempt, Usage

        return CallResult(
            Completion(
                text=f"[{chosen}] answer",
                provider_model=f"{chosen}-model",
                usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17),
                latency_ms=0.1,
            ),
            chosen,
            [Attempt(candidate=chosen, outcome="ok", latency_ms=0.1, status=200)],
            cost_usd=1e-5,
        )


async def _best_cpu_us(fn: Any, items: list[Any], repeats: int = 3) -> float:
    """CPU µs per item of ``await fn(chunk)``, the best of ``repeats`` chunks."""
    chunk = max(1, len(items) // repeats)
    best = float("inf")
    for r in range(repeats):
        part = items[r * chunk : (r + 1) * chunk]
        t = time.process_time()
        await fn(part)
        best = min(best, (time.process_time() - t) / len(part))
    return best * 1e6


async def handler_costs(n: int) -> dict[str, float]:
    """CPU µs per record: intake, pipeline (rules), handler w/o model call, the dispatcher around
    an instant in-process client, response+audit JSON. Each the best of 3 chunks, after a warm-up."""
    from router_stream.config import parse_config
    from router_stream.metrics import MetricsObserver
    from router_stream.processing.handler import Handler
    from router_stream.processing.intake import classify
    from router_stream.processing.partition import Source, StateView
    from router_stream.providers.resilience import Dispatcher
    from router_stream.routing.base import RoutingContext
    from router_stream.runtime import build_pipeline

    config = parse_config(
        {
            "candidates": {
                c: {"base_url": "http://127.0.0.1:9/v1", "model": f"{c}-model", "context_window": 32000}
                for c in CANDIDATES
            },
            "default": "cheap",
            "strategies": [RULES_STRATEGY],
        },
        environ={},
    )
    pipeline = build_pipeline(config)
    handler = Handler(config, pipeline, InstantDispatcher(), "bench")
    dispatcher = Dispatcher(
        config, clients={c: InstantClient() for c in CANDIDATES}, observer=MetricsObserver()
    )
    records = traffic(n + 100, max(1, n // 15), 9, "hc")
    sources = [Source("t", 0, i, k, v) for i, (k, v) in enumerate(records)]
    warm, sources = sources[:100], sources[100:]
    out: dict[str, float] = {}

    async def intake(part: list[Any]) -> None:
        for s in part:
            classify(s.value, 1_000_000, 32000)

    async def route(part: list[Any]) -> None:
        for s in part:
            await pipeline.route(classify(s.value), RoutingContext(key=s.key.decode(), candidates=CANDIDATES))

    await intake(warm)
    await route(warm)
    intake_us = await _best_cpu_us(intake, sources)
    out["intake (classify)"] = intake_us
    out["routing (Pipeline.route, rules) when it runs"] = await _best_cpu_us(route, sources) - intake_us

    outcomes: list[Any] = []
    store: dict[bytes, bytes | None] = {}

    async def handle(part: list[Any]) -> None:
        for i in range(0, len(part), 500):  # one StateView per 500-record batch, as the processor does
            view = StateView(store)
            for s in part[i : i + 500]:
                outcomes.append(await handler.handle(s, view))
            store.update(view.pending)

    await handle(warm)
    outcomes.clear()
    handler_us = await _best_cpu_us(handle, sources)
    hits = sum(1 for o in outcomes if o.audit is not None and o.audit.cache_hit)
    out[
        f"handler without the model call ({hits / max(1, len(outcomes)):.0%} decision-cache hits skip routing)"
    ] = handler_us

    from router_stream.schemas import Request

    requests = [r for s in sources if isinstance(r := classify(s.value), Request)]

    async def dispatch(part: list[Any]) -> None:
        for r in part:
            await dispatcher.call(r, "cheap", time.monotonic() + 30)

    async def instant(part: list[Any]) -> None:
        client = InstantClient()
        for r in part:
            await client.complete(r)

    await dispatch(requests[:50])
    out["dispatcher around the call (retries, breaker, limits; instant client)"] = await _best_cpu_us(
        dispatch, requests
    ) - await _best_cpu_us(instant, requests)

    async def serialize(part: list[Any]) -> None:
        for o in part:
            for record in (o.response, o.audit, o.dead_letter):
                if record is not None:
                    record.model_dump_json(exclude_none=True).encode()

    out["response + audit JSON (commit side)"] = await _best_cpu_us(serialize, outcomes)
    out["_dead_letters"] = float(sum(1 for o in outcomes if o.dead_letter is not None))
    return out
