"""The baselines the worker is measured against: a bare transactional pass-through, and the floor.

:func:`passthrough` drains a requests topic with its own consumer group, writing two records per
input record (sized like the worker's response and audit records) in a transaction with the
consumed offsets: one transactional producer per partition (the processor's own loop, without the
handler) or one for the whole process. With ``model_url`` it is the **floor**: each record also
makes one raw ``aiohttp`` chat-completions call first, the least any router must do per record.
:func:`baseline_only` runs the per-partition pass-through alone (for ``routing`` when
``kafka-limit`` did not run). Rates and CPU figures come back as plain dicts.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from .common import CpuWatch, Ctx, produce_fast, router_topics, traffic

# used when the worker's output sizes are unknown (routing benchmark run alone)
DEFAULT_SIZES = {"response": 330, "audit": 900}


async def passthrough(
    bootstrap: str,
    in_topic: str,
    outs: tuple[str, str],
    group: str,
    n: int,
    sizes: tuple[int, int],
    *,
    per_partition: bool,
    max_batch: int = 500,
    timeout: float = 300,
    say=None,
    broker_pid: int | None = None,
    model_url: str | None = None,
    max_in_flight: int = 256,
) -> dict[str, Any]:
    """Drain ``n`` records from ``in_topic``: per record one write to each of ``outs`` in a
    transaction with the consumed offsets. Returns rate and CPU figures.

    With ``model_url`` this is the **floor**: before its two writes each record is parsed and
    makes one raw aiohttp chat-completions call (its prompt as the message) to that server, at
    most ``max_in_flight`` at once across partitions, and the answer is parsed; the records of a
    batch are called concurrently, the batch commits when all are answered."""
    payload_a, payload_b = b"r" * sizes[0], b"a" * sizes[1]
    session: Any = None
    slots = asyncio.Semaphore(max_in_flight)
    if model_url is not None:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_in_flight), timeout=aiohttp.ClientTimeout(total=30)
        )
        url = f"{model_url}/chat/completions"

    async def call(value: bytes) -> None:
        request = json.loads(value)
        messages = request.get("messages") or [{"role": "user", "content": request.get("prompt", "")}]
        async with slots, session.post(url, json={"model": "floor", "messages": messages}) as r:
            r.raise_for_status()
            answer = json.loads(await r.read())
        if not answer.get("choices"):
            raise RuntimeError("floor: the model server answered without choices")

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
    )
    producers: dict[TopicPartition, AIOKafkaProducer] = {}
    tasks: dict[TopicPartition, asyncio.Task[None]] = {}
    state = {"done": 0, "t_first": None, "done_first": 0, "commits": 0, "cpu_first": 0.0}

    def new_producer(txid: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=txid,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
        )

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            if not per_partition:
                return
            new = [tp for tp in assigned if tp not in producers]
            for tp in new:
                producers[tp] = new_producer(f"{group}.{tp.topic}.{tp.partition}")
            await asyncio.gather(*(producers[tp].start() for tp in new))

    def committed(count: int) -> None:
        state["done"] += count
        state["commits"] += 1
        if state["t_first"] is None:
            state["t_first"] = time.monotonic()
            state["done_first"] = state["done"]
            state["cpu_first"] = time.process_time()
            watch.start()

    async def batch(
        producer: AIOKafkaProducer, offsets: dict[TopicPartition, int], records: list[Any]
    ) -> None:
        if session is not None:
            await asyncio.gather(*(call(r.value) for r in records))
        await producer.begin_transaction()
        for r in records:
            await producer.send(outs[0], key=r.key, value=payload_a)
            await producer.send(outs[1], key=r.key, value=payload_b)
        await producer.send_offsets_to_transaction(offsets, group)
        await producer.commit_transaction()
        committed(len(records))

    async def partition_batch(tp: TopicPartition, records: list[Any]) -> None:
        try:
            await batch(producers[tp], {tp: records[-1].offset + 1}, records)
        finally:
            consumer.resume(tp)

    watch = CpuWatch({"broker": broker_pid})
    single = new_producer(f"{group}.single") if not per_partition else None
    await consumer.start()
    if single is not None:
        await single.start()
    consumer.subscribe([in_topic], listener=Listener())
    deadline = time.monotonic() + timeout
    last_say = time.monotonic()
    try:
        while state["done"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pass-through: {state['done']:,}/{n:,} after {timeout:.0f}s")
            data = await consumer.getmany(timeout_ms=100, max_records=max_batch)
            if single is not None:
                if data:
                    offsets = {tp: recs[-1].offset + 1 for tp, recs in data.items()}
                    await batch(single, offsets, [r for recs in data.values() for r in recs])
            else:
                for tp, records in data.items():
                    task = tasks.get(tp)
                    if task is not None and not task.done():
                        consumer.seek(tp, records[0].offset)
                        continue
                    if task is not None and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                    consumer.pause(tp)
                    tasks[tp] = asyncio.create_task(partition_batch(tp, records))
            now = time.monotonic()
            if say is not None and now - last_say >= 5:
                last_say = now
                say(f"pass-through: {state['done']:,}/{n:,}")
        t_end = time.monotonic()
        cpu_end = time.process_time()
    finally:
        for task in tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await consumer.stop()
        for p in [*producers.values(), *([single] if single else [])]:
            await p.stop()
        if session is not None:
            await session.close()
    used = watch.stop()
    seconds = max(1e-6, t_end - state["t_first"])
    counted = n - state["done_first"]
    return {
        "rate": counted / seconds,
        "seconds": seconds,
        "counted": counted,
        "commits": state["commits"],
        "cpu_client_s": cpu_end - state["cpu_first"],
        "cpu_broker_s": used.get("broker"),
    }


def baseline_only(ctx: Ctx, n: int) -> dict[str, Any]:
    """The per-partition pass-through alone (for ``routing`` when ``kafka-limit`` did not run)."""
    bootstrap = ctx.need_kafka()
    prefix = ctx.prefix("kl")
    outs = (f"{prefix}.bl.responses", f"{prefix}.bl.audit")
    topics = asyncio.run(router_topics(bootstrap, prefix, ctx.partitions, extra=list(outs)))
    ctx.created_topics += [*topics.values(), *outs]
    asyncio.run(produce_fast(bootstrap, topics["requests"], traffic(n, max(1, n // 10), 7, prefix)))
    return asyncio.run(
        passthrough(
            bootstrap,
            topics["requests"],
            outs,
            f"{prefix}-bl",
            n,
            (DEFAULT_SIZES["response"], DEFAULT_SIZES["audit"]),
            per_partition=True,
            say=ctx.say,
            broker_pid=ctx.broker_pid,
        )
    )
