"""Reading key state from the committed changelog, without a worker (``router-stream state get``).

The changelog is co-partitioned with the requests topic: the processor writes the state of
requests partition *p* to changelog partition *p* (``processing/transactions.py``).
A key's state therefore sits in the changelog partition numbered like the requests partition its
records land on, and that is the Kafka default partitioner's choice for the record key
(:func:`partition_for_key`: murmur2, as in the Java client, aiokafka and Kafka Streams).

A read goes from the partition's start to its end as a ``read_committed`` consumer sees it (the
last stable offset): the last value of a key wins, a tombstone deletes it. That is exactly what a
worker restoring the partition would rebuild, so it is the committed truth, whoever owns the
partition and whether or not one is running.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from ..errors import SetupError


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the default partitioner (murmur2) gives a keyed record among ``partitions``.

    Producers with another partitioner (librdkafka's default is crc32 ``consistent_random``)
    place keys elsewhere; the CLI's ``--partition`` says where instead."""
    partition: int = (murmur2(key) & 0x7FFFFFFF) % partitions  # aiokafka is untyped
    return partition


class TopicMissing(SetupError, LookupError):
    """A topic the read needs does not exist (``router-stream topics apply`` creates it)."""


@dataclass
class ChangelogRead:
    """The last committed value of each wanted key, per partition read (absent: no state)."""

    partitions: int
    end_offsets: dict[int, int] = field(default_factory=dict)
    values: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    records_read: int = 0


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> int:
    """The partition count of ``topic``; raises :class:`TopicMissing`."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise TopicMissing(f"topic {topic!r} does not exist (router-stream topics apply creates it)")
    return len(parts)


async def read_keys(
    settings: dict[str, Any],
    requests_topic: str,
    changelog_topic: str,
    wanted: set[bytes],
    partition: int | None = None,
    kafka_key: bytes | None = None,
    timeout_s: float = 300,
) -> ChangelogRead:
    """Read changelog partitions to their committed end, keeping ``wanted`` keys: ``partition``,
    else the one :func:`partition_for_key` gives ``kafka_key``, else all of them.

    Also checks that the changelog has as many partitions as the requests topic (otherwise
    partition numbers would not match and nothing read here would mean anything)."""
    consumer = AIOKafkaConsumer(
        **settings,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await asyncio.wait_for(consumer.start(), 30)
    try:
        n = await topic_partitions(consumer, requests_topic)
        n_changelog = await topic_partitions(consumer, changelog_topic)
        if n_changelog != n:
            raise TopicMissing(
                f"{changelog_topic} has {n_changelog} partitions but {requests_topic} has {n}: "
                "they must match (router-stream topics apply reports it)"
            )
        if partition is not None and not 0 <= partition < n:
            raise ValueError(
                f"partition {partition} does not exist: {requests_topic} has partitions 0..{n - 1}"
            )
        chosen = (
            [partition]
            if partition is not None
            else [partition_for_key(kafka_key, n)]
            if kafka_key is not None
            else list(range(n))
        )
        tps = [TopicPartition(changelog_topic, p) for p in chosen]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out = ChangelogRead(n, {tp.partition: ends[tp] for tp in tps})
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {changelog_topic} did not reach its end within {timeout_s:.0f} s"
                )
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    out.records_read += 1
                    if record.key in wanted:
                        if record.value is None:
                            out.values.pop((tp.partition, record.key), None)
                        else:
                            out.values[(tp.partition, record.key)] = record.value
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()
