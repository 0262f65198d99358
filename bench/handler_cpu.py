"""CPU per record of the worker's own logic, without Kafka and without HTTP.

The kafka-limit benchmark's CPU budget splits the worker's cost per record into parts measured
apart in the same run; this is the part between them: the record through
:class:`~router_stream.processing.handler.Handler` (classification, rule routing, decision cache,
the dispatcher's bookkeeping, response and audit records, metrics) and the JSON of its outputs,
with an in-process model client that answers at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from router_stream.config import RouterConfig
from router_stream.metrics import MetricsObserver
from router_stream.processing.handler import Handler, Source, StateView
from router_stream.providers.base import ChatCall, Completion
from router_stream.providers.resilience import Dispatcher
from router_stream.runtime import build_pipeline
from router_stream.schemas import Usage
from router_stream_dev.demo import request_body


class InstantClient:
    """A ModelClient answering in-process: what is left is the worker's own work."""

    async def complete(self, call: ChatCall) -> Completion:
        text = "answer to: " + str(call.messages[-1].get("content"))[:40]
        return Completion(
            text=text,
            provider_model="instant",
            latency_ms=0.0,
            status=200,
            usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        )

    async def aclose(self) -> None:
        return None


class _Store(dict):  # type: ignore[type-arg]
    def get(self, key: bytes) -> bytes | None:  # type: ignore[override]
        return dict.get(self, key)


def handler_cpu_us(
    strategies: list[dict[str, Any]], n: int = 5_000, keys: int = 2_000, rounds: int = 3
) -> float:
    """Median over ``rounds`` of the process CPU µs per record for ``n`` demo-mix records."""
    cfg = RouterConfig.model_validate(
        {
            "candidates": {
                name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "strong")
            },
            "default": "cheap",
            "strategies": strategies,
        }
    )
    rng = random.Random(5)
    sources = [
        Source("bench.requests", 0, i, f"key-{i % keys}".encode(), json.dumps(request_body(i, rng)).encode())
        for i in range(n)
    ]

    async def one_round() -> float:
        client = InstantClient()
        dispatcher = Dispatcher(cfg, clients={"cheap": client, "strong": client}, observer=MetricsObserver())
        handler = Handler(cfg, build_pipeline(cfg), dispatcher, "bench")
        view = StateView(_Store())
        t0 = time.process_time()
        for s in sources:
            out = await handler.handle(s, view)
            for record in (out.response, out.audit, out.dead_letter):
                if record is not None:
                    record.model_dump_json(exclude_none=True).encode()
        spent = time.process_time() - t0
        await dispatcher.aclose()
        return spent / n * 1e6

    results = sorted([asyncio.run(one_round()) for _ in range(rounds + 1)][1:])  # the first round warms up
    return results[len(results) // 2]
