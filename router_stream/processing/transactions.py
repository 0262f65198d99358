"""Kafka transactions on one input partition's producer: the only code that begins, commits or aborts one.

Every write of a partition — a batch's outputs with its consumed offset, the janitor's expiry
tombstones, a Batch API job's answers — goes through the partition's transactional producer
(``transactional.id`` = ``<group>.<topic>.<partition>``), so a new owner's ``init_transactions``
fences all of them at once. The local store follows the committed changelog: it is written only
after the commit, with the changelog offset it reflects, so it is never ahead of Kafka.

A fence seen here (another owner, or the broker timed our transaction out) is handed to the
``on_fenced`` hook given by the lifecycle, which stops using the partition and reopens it if it
is still ours (``lifecycle.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from .. import metrics
from ..config import TopicsConfig
from ..state.store import PartitionStore
from .trace import TRACE_HEADERS

#: What a fenced producer raises: from now on only the new owner may write this partition.
FENCED = (ProducerFenced, InvalidProducerEpoch)


class PartitionTransactions:
    """The transactions of one input partition: a batch's commit (with its consumed offset) and
    offset-less ones (:meth:`transact`) for the janitor and Batch API job completions."""

    def __init__(
        self,
        tp: TopicPartition,
        producer: AIOKafkaProducer,
        store: PartitionStore,
        topics: TopicsConfig,
        group_id: str,
        on_fenced: Callable[[BaseException, str], None],
    ) -> None:
        self.tp = tp
        self.producer = producer
        self.store = store
        self.topics = topics
        self.group_id = group_id
        self.on_fenced = on_fenced

    async def commit_batch(
        self, records: list[Any], payloads: list[list[tuple[str, bytes]]], writes: dict[bytes, bytes | None]
    ) -> None:
        """One batch in one transaction: the serialized outputs of each record (``payloads``,
        under the record's key and trace headers), the batch's changelog ``writes`` and the
        consumed offset; then the writes go into the store. Raises what the producer raises; the
        caller aborts (a failed batch is re-read) or treats a fence."""
        producer = self.producer
        t = self.topics
        await producer.begin_transaction()
        for record, values in zip(records, payloads):
            headers = [(k, v) for k, v in (record.headers or ()) if k.lower() in TRACE_HEADERS]
            for topic, value in values:
                await producer.send(
                    topic, key=record.key, value=value, headers=headers if topic != t.dead_letter else None
                )
        changelog = await self._send_changelog(writes)
        await producer.send_offsets_to_transaction({self.tp: records[-1].offset + 1}, self.group_id)
        await producer.commit_transaction()
        metrics.TRANSACTIONS.labels("commit").inc()
        await self._apply(changelog, writes)

    async def transact(
        self, outputs: list[tuple[str, bytes | None, bytes]], writes: dict[bytes, bytes | None]
    ) -> None:
        """A transaction without consumed offsets (janitor, Batch API completions): ``outputs``
        as (topic, key, value) and changelog ``writes``. A fence is reported to the lifecycle and
        re-raised; any other failure aborts the transaction and is re-raised."""
        producer = self.producer
        await producer.begin_transaction()
        try:
            for topic, key, value in outputs:
                await producer.send(topic, key=key, value=value)
            changelog = await self._send_changelog(writes)
            await producer.commit_transaction()
        except FENCED as exc:
            self.on_fenced(exc, "a janitor or Batch API transaction was refused")
            raise
        except BaseException:
            await self.abort_quietly()
            raise
        metrics.TRANSACTIONS.labels("commit").inc()
        await self._apply(changelog, writes)

    async def abort(self) -> None:
        """Abort the open transaction; raises what the producer raises (the caller retries)."""
        await self.producer.abort_transaction()

    async def abort_quietly(self) -> None:
        """Abort on the way out (a cancel, a failed offset-less transaction): best effort, bounded."""
        try:
            await asyncio.wait_for(self.producer.abort_transaction(), 10)
        except Exception:
            pass

    async def close(self) -> None:
        await self.producer.stop()

    async def _send_changelog(self, writes: dict[bytes, bytes | None]) -> list[Any]:
        """The writes into this partition's changelog partition, in order (their send futures)."""
        topic, partition = self.topics.changelog, self.tp.partition
        return [
            await self.producer.send(topic, key=k, value=v, partition=partition) for k, v in writes.items()
        ]

    async def _apply(self, changelog: list[Any], writes: dict[bytes, bytes | None]) -> None:
        """After a commit: the writes into the store, checkpointed at the changelog offset they reach.

        The commit succeeded, so every send did; they went to one partition in order, so the last
        one's offset is the highest (gathering them all cost a loop callback per record)."""
        if changelog:
            last = await changelog[-1]
            await asyncio.to_thread(self.store.apply, writes, last.offset + 1)
