"""CPU per record of the worker's own logic, without Kafka and without HTTP.

The kafka-limit benchmark's CPU budget splits the worker's cost per record into parts measured
apart in the same run; this is the part between them: the record through
:class:`~router_stream.processing.handler.Handler` (classification, rule routing, decision cache,
the dispatcher's bookkeeping, response and audit records, metrics) and the JSON of its outputs,
with an in-process model client that answers at once. :func:`batch_cpu_us` adds the way the
processor takes records: fetched batches through the per-key ordering (chains, in-flight slots,
one task per chain) and the JSON of each batch's outputs, still without Kafka or HTTP.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from router_stream.config import RouterConfig
from router_stream.metrics import MetricsObserver
from router_stream.processing.handler import Handler
from router_stream.processing.ordering import KeyOrdering
from router_stream.processing.outputs import serialize_outputs
from router_stream.processing.partition import FetchBatch, Partition, Source, StateView
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


def _config(strategies: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "candidates": {
                name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "strong")
            },
            "default": "cheap",
            "strategies": strategies,
            **(extra or {}),
        }
    )


def handler_cpu_us(
    strategies: list[dict[str, Any]], n: int = 5_000, keys: int = 2_000, rounds: int = 3
) -> float:
    """Median over ``rounds`` of the process CPU µs per record for ``n`` demo-mix records."""
    cfg = _config(strategies)
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
            if out.response is not None:
                out.response_json()  # as the worker does: made once, for the dedup entry and the output
            for record in (out.audit, out.dead_letter):
                if record is not None:
                    record.model_dump_json(exclude_none=True).encode()
        spent = time.process_time() - t0
        await dispatcher.aclose()
        return spent / n * 1e6

    results = sorted([asyncio.run(one_round()) for _ in range(rounds + 1)][1:])  # the first round warms up
    return results[len(results) // 2]


class _Record(NamedTuple):
    """The fields of aiokafka's ConsumerRecord the processor reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def batch_cpu_us(
    strategies: list[dict[str, Any]],
    n: int = 5_000,
    keys: int = 200,
    batch: int = 500,
    rounds: int = 3,
    max_in_flight: int = 64,
) -> float:
    """Like :func:`handler_cpu_us`, but the records go the processor's way: fetched batches of
    ``batch`` through the per-key ordering (chains, in-flight slots, tasks) and the JSON of the
    batch's outputs; median over ``rounds`` of the process CPU µs per record (no Kafka, no HTTP)."""
    cfg = _config(strategies, {"worker": {"max_in_flight": max_in_flight}})
    rng = random.Random(5)
    records = [
        _Record(
            "bench.requests",
            0,
            i,
            f"key-{i % keys}".encode(),
            json.dumps(request_body(i, rng)).encode(),
            (),
            0,
        )
        for i in range(n)
    ]

    async def one_round() -> float:
        client = InstantClient()
        dispatcher = Dispatcher(cfg, clients={"cheap": client, "strong": client}, observer=MetricsObserver())
        handler = Handler(cfg, build_pipeline(cfg), dispatcher, "bench")
        ordering = KeyOrdering(cfg, handler)
        store = _Store()
        part = Partition(TopicPartition("bench.requests", 0), store, None)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        t0 = time.process_time()
        for seq, start in enumerate(range(0, n, batch)):
            fetched = records[start : start + batch]
            fb = FetchBatch(fetched, StateView(store), part.gen, loop.create_future(), seq=seq)
            outcomes = await ordering.handle_batch(part, fb)
            serialize_outputs(cfg.topics, handler, fetched, outcomes)
            store.update({k: v for k, v in fb.view.pending.items() if v is not None})
            part.tails.clear()
        spent = time.process_time() - t0
        await dispatcher.aclose()
        return spent / n * 1e6

    results = sorted([asyncio.run(one_round()) for _ in range(rounds + 1)][1:])
    return results[len(results) // 2]
