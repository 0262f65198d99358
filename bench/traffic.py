"""Request traffic and the Kafka topics it goes to: the demo's request mix as records, producing
it fast, creating a router's topics (and waiting for their leaders), deleting them, end offsets.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from router_stream_dev.demo import request_body  # the demo's traffic mix
from router_stream_dev.harness import create_topics


def traffic(n: int, keys: int, seed: int, id_prefix: str) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [
        (f"customer-{rng.randrange(keys)}".encode(), json.dumps(request_body(i, rng, id_prefix)).encode())
        for i in range(n)
    ]


async def produce_fast(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    say: Callable[[str], None] | None = None,
) -> float:
    """Produce with one idempotent producer (per-partition order kept); returns seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, (key, value) in enumerate(records, 1):
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
            if say and i % 20000 == 0:
                say(f"produced {i:,}/{len(records):,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def router_topics(
    bootstrap: str, prefix: str, partitions: int, extra: list[str] = ()
) -> dict[str, str]:
    names = {
        "requests": f"{prefix}.requests",
        "responses": f"{prefix}.responses",
        "audit": f"{prefix}.audit",
        "dead_letter": f"{prefix}.dead-letter",
        "changelog": f"{prefix}.decisions-changelog",
    }
    await create_topics(bootstrap, [*names.values(), *extra], partitions, compact=[names["changelog"]])
    await wait_for_leaders(bootstrap, [*names.values(), *extra], partitions)
    return names


async def wait_for_leaders(bootstrap: str, topics: list[str], partitions: int, timeout: float = 60) -> None:
    """Until every partition of ``topics`` has a leader (producing earlier only logs retries)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()

    def led(meta: Any, topic: str, p: int) -> bool:
        leader = meta.leader_for_partition(TopicPartition(topic, p))
        return leader is not None and leader >= 0

    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await c._client.force_metadata_update()
            meta = c._client.cluster
            if all(
                len(meta.partitions_for_topic(t) or ()) == partitions
                and all(led(meta, t, p) for p in range(partitions))
                for t in topics
            ):
                return
            await asyncio.sleep(0.2)
    finally:
        await c.stop()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def topic_end_total(bootstrap: str, topic: str) -> int:
    """Sum of end offsets (committed records plus transaction markers)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        ends = await c.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await c.stop()
