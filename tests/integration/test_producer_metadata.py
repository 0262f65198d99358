"""Partition producers that adopt one shared copy of the output topics' metadata (real broker).

The first producer asks the broker; the next ones adopt its snapshot and must still find every
partition's leader and commit transactions to all of them; a producer's own refresh replaces only
its own copy. The aiokafka internals behind it are pinned in
tests/unit/processing/test_producer_metadata.py."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router_stream.processing.producer_metadata import SharedTopicMetadata
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
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid, enable_idempotence=True)
    shared.track(producer)
    await producer.start()
    return producer, await shared.attach(producer)


async def test_one_fetch_for_all_producers_and_every_partition_reachable(
    kafka_bootstrap: str, prefix: str
) -> None:
    topics = [f"{prefix}.responses", f"{prefix}.audit"]
    await created(kafka_bootstrap, topics)
    shared = SharedTopicMetadata(topics)
    producers: list[AIOKafkaProducer] = []
    try:
        adopted = []
        for i in range(3):
            producer, was_adopted = await started(kafka_bootstrap, shared, f"{prefix}-{i}")
            producers.append(producer)
            adopted.append(was_adopted)
        assert adopted == [False, True, True] and shared.adopted == 2 and shared.fetches == 1
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

        own = producers[1].client.cluster
        shared_partitions = producers[2].client.cluster._partitions
        assert own._partitions is shared_partitions  # one copy in memory until a refresh
        assert await producers[1].client.force_metadata_update()
        assert own._partitions is not shared_partitions
        assert producers[2].client.cluster._partitions is shared_partitions
        assert await producers[2].partitions_for(topics[0]) == set(range(PARTITIONS))
    finally:
        for producer in producers:
            await producer.stop()


async def test_a_snapshot_older_than_max_age_is_fetched_again(kafka_bootstrap: str, prefix: str) -> None:
    topics = [f"{prefix}.responses"]
    await created(kafka_bootstrap, topics)
    shared = SharedTopicMetadata(topics, max_age_s=0)
    producers: list[AIOKafkaProducer] = []
    try:
        for i in range(2):
            producer, was_adopted = await started(kafka_bootstrap, shared, f"{prefix}-{i}")
            producers.append(producer)
            assert not was_adopted
            assert await producer.partitions_for(topics[0]) == set(range(PARTITIONS))
        assert shared.adopted == 0 and shared.fetches == 2
    finally:
        for producer in producers:
            await producer.stop()
