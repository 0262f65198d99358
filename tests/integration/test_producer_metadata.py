"""Partition producers that adopt one shared copy of the output topics' metadata (real broker).

The producers ask the broker nothing for those topics, still find every partition's leader and
commit transactions to all of them, adopt each refresh of the shared copy, and a producer's own
refresh replaces only its own copy. The aiokafka internals behind it are pinned in
tests/unit/processing/test_producer_metadata.py."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router_stream.processing.producer_metadata import PRODUCER_MAX_AGE_MS, SharedTopicMetadata
from router_stream_dev.harness import create_topics

PARTITIONS = 6


async def created(bootstrap: str, topics: list[str]) -> None:
    """Create ``topics`` and wait until every partition has a leader."""
    await create_topics(bootstrap, topics, PARTITIONS)
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        for _ in range(100):
            cluster = probe.client.cluster
            if all(
                (cluster.leader_for_partition(TopicPartition(t, p)) or -1) >= 0
                for t in topics
                for p in range(PARTITIONS)
            ):
                return
            probe.client.set_topics(topics)
            await probe.client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise AssertionError(f"no leaders for {topics} after 10 s")
    finally:
        await probe.stop()


async def started(bootstrap: str, shared: SharedTopicMetadata, tid: str) -> tuple[AIOKafkaProducer, bool]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=tid,
        enable_idempotence=True,
        metadata_max_age_ms=shared.producer_max_age_ms,
    )
    shared.track(producer)
    await producer.start()
    return producer, await shared.attach(producer)


async def test_producers_adopt_the_shared_copy_and_reach_every_partition(
    kafka_bootstrap: str, prefix: str
) -> None:
    topics = [f"{prefix}.responses", f"{prefix}.audit"]
    await created(kafka_bootstrap, topics)
    shared = SharedTopicMetadata(topics, {"bootstrap_servers": kafka_bootstrap})
    await shared.start()
    assert shared.producer_max_age_ms == PRODUCER_MAX_AGE_MS  # no refresh of their own every 5 min
    producers: list[AIOKafkaProducer] = []
    try:
        for i in range(3):
            producer, adopted = await started(kafka_bootstrap, shared, f"{prefix}-{i}")
            producers.append(producer)
            assert adopted
        assert shared.adopted == 3 and shared.fetches == 0
        for producer in producers:
            assert producer.client._topics == set(topics)  # its own refreshes: these topics only
            for topic in topics:
                assert await producer.partitions_for(topic) == set(range(PARTITIONS))

        for i, producer in enumerate(producers):
            async with producer.transaction():
                for topic in topics:
                    for p in range(PARTITIONS):
                        await producer.send(topic, key=f"{i}".encode(), value=b"x", partition=p)
        reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, isolation_level="read_committed")
        await reader.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            ends = await reader.end_offsets(tps)
        finally:
            await reader.stop()
        # three committed transactions per partition: a record and a commit marker each
        assert all(ends[tp] == 6 for tp in tps), ends

        before = producers[0].client.cluster._partitions
        assert all(p.client.cluster._partitions is before for p in producers)  # one copy in memory
        assert await shared.refresh()
        after = producers[0].client.cluster._partitions
        assert after is not before and all(p.client.cluster._partitions is after for p in producers)

        assert await producers[1].client.force_metadata_update()  # its own, after a NOT_LEADER say
        assert producers[1].client.cluster._partitions is not after
        assert producers[2].client.cluster._partitions is after
        assert await producers[1].partitions_for(topics[0]) == set(range(PARTITIONS))
    finally:
        for producer in producers:
            await producer.stop()
        await shared.stop()


async def test_without_the_shared_client_each_producer_fetches_its_own(
    kafka_bootstrap: str, prefix: str
) -> None:
    topics = [f"{prefix}.responses"]
    await created(kafka_bootstrap, topics)
    shared = SharedTopicMetadata(topics)  # never started: as with an aiokafka it cannot share with
    producers: list[AIOKafkaProducer] = []
    try:
        assert shared.producer_max_age_ms == 300_000  # so they keep refreshing themselves
        for i in range(2):
            producer, adopted = await started(kafka_bootstrap, shared, f"{prefix}-{i}")
            producers.append(producer)
            assert not adopted
            assert await producer.partitions_for(topics[0]) == set(range(PARTITIONS))
        assert shared.adopted == 0 and shared.fetches == 2
    finally:
        for producer in producers:
            await producer.stop()
