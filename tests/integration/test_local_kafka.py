"""The broker that provide_broker hands out really does Kafka transactions.

Why: every exactly-once test builds on this; if aborted records leaked to a
read_committed consumer here, nothing above could be trusted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router_stream_dev.broker import provide_broker

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    with provide_broker() as servers:
        yield servers


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, isolation_level: str) -> list[bytes]:
    """Every value up to the partition's end (the LSO for read_committed)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while await consumer.position(tp) < end:
                batches = await consumer.getmany(tp, timeout_ms=500)
                values += [rec.value for rec in batches.get(tp, []) if rec.value is not None]
        return values
    finally:
        await consumer.stop()


async def test_read_committed_sees_only_committed_transaction(bootstrap: str) -> None:
    topic = f"local-kafka-tx-{uuid.uuid4().hex[:8]}"
    await _create_topic(bootstrap, topic)

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"local-kafka-test-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"committed")
        await producer.commit_transaction()

        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
    finally:
        await producer.stop()

    assert await _read_all(bootstrap, topic, "read_committed") == [b"committed"]
    # The aborted record did reach the log: only the isolation level hides it.
    assert await _read_all(bootstrap, topic, "read_uncommitted") == [b"committed", b"aborted"]
