"""Partition lifecycle: assign, open (fence, restore, seek), standby copies, revoke, close, reopen.

A partition of the requests topic that the group gives this worker is *opened* before any of its
records is handled: a transactional producer whose ``init_transactions`` fences the previous
owner (a zombie can no longer commit) and ends its open transaction; the local RocksDB store
replayed from its checkpoint up to the committed changelog; the consumer sought to the group's
committed offset. Until then the partition stays paused. On revoke its batches in flight get
``worker.shutdown_grace_s`` to commit, then the producer and store are closed. A partition whose
producer is fenced without a rebalance is reopened the same way.

Kept apart from the exactly-once loop (``processor.py``): the loop only sees opened partitions
in :attr:`PartitionLifecycle.parts`, and asks here whether it may resume one. Replaying the
changelog into a store and the standby copies are ``restore.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .. import metrics
from ..config import RouterConfig
from ..kafka_settings import client_settings
from ..state.store import PartitionStore
from .committed_offset import committed_offset
from .partition import Partition
from .producer_metadata import SharedTopicMetadata
from .restore import ChangelogRestorer, StandbyCopies, state_dir
from .transactions import PartitionTransactions

log = logging.getLogger(__name__)

#: Partitions opened at the same time. An open mostly waits on the broker, and its event-loop
#: work is small since the output topics' metadata is decoded once per worker (that decode, 480
#: at once, stalled the loop 37 s). 32 opened 480 in ~5-9 s, not ~20 s; 64/128: no better.
OPEN_CONCURRENCY = 32


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types: its base is Any
    def __init__(self, lifecycle: PartitionLifecycle) -> None:
        self._l = lifecycle

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._l.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._l.assign(list(assigned))


class PartitionLifecycle:
    """The requests partitions of one worker, from assignment to close (see the module doc).

    ``on_opened`` starts a newly opened partition's helpers (janitor, Batch API jobs) and
    ``on_fatal`` stops the worker when a partition cannot be opened."""

    def __init__(
        self,
        config: RouterConfig,
        worker_id: str,
        on_opened: Callable[[Partition], None],
        on_fatal: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.topics = config.topics
        self._on_opened = on_opened
        self._on_fatal = on_fatal
        self.parts: dict[TopicPartition, Partition] = {}
        self.opening: dict[TopicPartition, asyncio.Task[None]] = {}
        # reopen tasks after a fence: held so they are not garbage-collected mid-flight
        self._reopening: set[asyncio.Task[None]] = set()
        self._open_slots = asyncio.Semaphore(OPEN_CONCURRENCY)
        self.consumer: AIOKafkaConsumer | None = None
        self.stopping = False
        self.rebalancing = False
        self.assigned_once = asyncio.Event()
        self.restored_on_assign = 0
        self.restorer = ChangelogRestorer(config)
        outputs = [self.topics.responses, self.topics.audit, self.topics.changelog]  # not the DLQ: rare
        self.output_metadata = SharedTopicMetadata(outputs, client_settings(config.kafka))
        self.standby = StandbyCopies(config, self.restorer, self._topic_partitions, self._holds)

    def _topic_partitions(self) -> set[int]:
        consumer = self.consumer
        return (consumer.partitions_for_topic(self.topics.requests) if consumer else None) or set()

    def _holds(self, partition: int) -> bool:
        tp = TopicPartition(self.topics.requests, partition)
        return tp in self.parts or tp in self.opening

    @property
    def restored_records(self) -> int:
        """Changelog records replayed into local stores so far (on assignment and into standby copies)."""
        return self.restorer.restored_records

    @property
    def settled(self) -> bool:
        """Not rebalancing and no partition still opening."""
        return not self.rebalancing and not self.opening

    async def start(self) -> None:
        """Start the changelog reader and the group consumer (not yet subscribed: :meth:`subscribe`).

        Restores are :mod:`.restore`'s (a reader that fetches only while it replays). With a
        stable ``worker.worker_id`` the consumer is a static group member (``group.instance.id``):
        a restarted worker takes its partitions back without a rebalance, and a SIGTERM does not
        leave the group (docs/operations.md, "Start-up and recovery")."""
        kafka = self.config.kafka
        await self.restorer.start()
        await self.output_metadata.start()
        static_id = self.config.worker.worker_id if kafka.static_membership else None
        self.consumer = AIOKafkaConsumer(
            **client_settings(kafka),
            group_id=kafka.group_id,
            group_instance_id=static_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            # at most 1 s: survivors learn of a dead member's rebalance sooner than session / 3
            heartbeat_interval_ms=max(100, min(1000, kafka.session_timeout_ms // 3)),
            max_poll_interval_ms=max(300_000, kafka.transaction_timeout_ms * 2),
            rebalance_timeout_ms=max(60_000, int(self.config.worker.shutdown_grace_s * 1000) + 30_000),
            client_id=f"router-stream-{self.worker_id}",
        )
        await self.consumer.start()

    def subscribe(self) -> None:
        """Join the group: assignments arrive through :meth:`assign`, revocations through :meth:`revoke`."""
        assert self.consumer is not None
        self.consumer.subscribe([self.topics.requests], listener=_Listener(self))

    def start_standby(self) -> None:
        """Keep warm copies of the partitions owned elsewhere, if ``worker.standby`` asks for them."""
        if self.config.worker.standby:
            self.standby.start()

    async def cancel_opening(self) -> None:
        """Stop opening partitions (shutdown): what they opened so far is released."""
        for task in list(self.opening.values()):
            task.cancel()
        await asyncio.gather(*self.opening.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Leave the group, close every partition, the standby copies and the changelog reader."""
        if self.consumer is not None:
            try:
                await self.consumer.stop()  # leaves the group; our revoke handler closes partitions
            except Exception as exc:
                log.warning("consumer stop: %s", exc)
        await self.close(list(self.parts))
        await self.standby.stop()
        await self.restorer.stop()
        await self.output_metadata.stop()

    # ------------------------------------------------------------------ assign and open
    async def assign(self, tps: list[TopicPartition]) -> None:
        """Pause the new partitions and open them in the background.

        aiokafka stops heartbeating while this callback runs (group_coordinator.py), and opening
        a partition (init_transactions, changelog restore) can take seconds under load: done
        inline it made workers miss their session and rebalance again. The partitions stay
        paused until their producer is fenced-in, their state restored and their offset sought.
        """
        assert self.consumer is not None
        mine = [
            tp
            for tp in tps
            if tp.topic == self.topics.requests and tp not in self.parts and tp not in self.opening
        ]
        if mine:
            self.consumer.pause(*mine)
        for tp in mine:
            # A provisional position, never fetched (paused until the open seeks): without one
            # aiokafka's fetcher asks each committed offset in turn, fetching nothing meanwhile.
            self.consumer.seek(tp, 0)
            self.opening[tp] = asyncio.create_task(self._open_and_resume(tp), name=f"open-{tp.partition}")
        self.rebalancing = False
        self.assigned_once.set()

    async def _open_and_resume(self, tp: TopicPartition) -> None:
        started = time.monotonic()
        try:
            await self._open_with_retry(tp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._on_fatal(exc)
            return
        finally:
            self.opening.pop(tp, None)
        metrics.ASSIGNED.set(len(self.parts))
        log.info("opened partition %d in %.2fs", tp.partition, time.monotonic() - started)
        if self.consumer is not None and tp in self.consumer.assignment() and not self.stopping:
            self.consumer.resume(tp)

    async def _open_with_retry(self, tp: TopicPartition, attempts: int = 6) -> None:
        """Open a partition; a broker restart in the middle is retried (1, 2, 4, 8, 16 s) before we die."""
        for attempt in range(attempts):
            try:
                async with self._open_slots:
                    await self._open_partition(tp)
                return
            except (TimeoutError, KafkaError, OSError) as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("opening %s failed (%s: %s); retrying", tp, type(exc).__name__, exc)
                await asyncio.sleep(2**attempt)

    async def _open_partition(self, tp: TopicPartition) -> None:
        assert self.consumer is not None
        kafka = self.config.kafka
        producer = AIOKafkaProducer(
            **client_settings(kafka),
            transactional_id=f"{kafka.group_id}.{tp.topic}.{tp.partition}",
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=kafka.transaction_timeout_ms,
            linger_ms=2,
            metadata_max_age_ms=self.output_metadata.producer_max_age_ms,  # refreshed for it
            client_id=f"router-stream-{self.worker_id}-p{tp.partition}",
        )
        store: PartitionStore | None = None
        try:
            self.output_metadata.track(producer)
            await producer.start()  # init_transactions: fences the previous owner, ends its transaction
            # Output topics' metadata now (not per topic in the first transaction), shared.
            await self.output_metadata.attach(producer)
            await self.standby.release(tp.partition)  # one RocksDB handle per store and process
            # Not in a thread: rocksdict holds the GIL for the whole open (~9 ms of file creation
            # and syncs), so every socket call of the loop waited for one (docs/operations.md).
            store = PartitionStore(state_dir(self.config, tp.partition))
            self.restored_on_assign += await self.restorer.restore(tp.partition, store)
            committed = await committed_offset(
                self.consumer, kafka.group_id, tp, stopping=lambda: self.stopping
            )
            if committed is None:
                # Not seek_to_beginning(): its ListOffsets queues behind the consumer's 500 ms
                # fetch long-poll. Below the log start, auto_offset_reset="earliest" resets there.
                self.consumer.seek(tp, 0)
                next_offset = 0
            else:
                self.consumer.seek(tp, committed)
                next_offset = committed
        except BaseException:  # including cancellation by a revoke: release what we opened
            await producer.stop()
            if store is not None:
                store.close()
            raise
        part = self.new_partition(tp, producer, store, next_offset)
        self.parts[tp] = part
        self._on_opened(part)

    def new_partition(
        self, tp: TopicPartition, producer: AIOKafkaProducer, store: PartitionStore, next_offset: int
    ) -> Partition:
        """An opened partition at ``next_offset``, whose transactions report a fence to :meth:`fenced`."""
        part: Partition
        transactions = PartitionTransactions(
            tp,
            producer,
            store,
            self.topics,
            self.config.kafka.group_id,
            on_fenced=lambda exc, doing: self.fenced(part, exc, doing),
        )
        part = Partition(tp, store, transactions, next_offset, dispatched=next_offset)
        return part

    # ------------------------------------------------------------------ revoke, close, fence
    async def revoke(self, tps: list[TopicPartition]) -> None:
        self.rebalancing = True
        opening = [task for tp in tps if (task := self.opening.pop(tp, None)) is not None]
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        mine = [tp for tp in tps if tp in self.parts]
        await self.drain(mine, self.config.worker.shutdown_grace_s)
        await self.close(mine)
        metrics.ASSIGNED.set(len(self.parts))

    async def drain(self, tps: list[TopicPartition], timeout: float) -> None:
        """Give the batches in flight on ``tps`` up to ``timeout`` seconds to commit; cancel the rest."""
        tasks = [
            b.task
            for tp in tps
            if (p := self.parts.get(tp))
            for b in p.inflight
            if b.task is not None and not b.task.done()
        ]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:  # abandoned: their records are re-read by the next owner
            task.cancel()
        if pending:
            log.warning(
                "cancelled %d in-flight batches after %.1fs; they will be reprocessed", len(pending), timeout
            )
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            part = self.parts.pop(tp, None)
            if part is None:
                continue
            helpers = [t for t in (part.jobs_task, part.janitor_task) if t is not None]
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await part.transactions.close()
            except Exception as exc:
                log.warning("closing producer of %s: %s", tp, exc)
            await asyncio.to_thread(part.store.close)
            try:
                metrics.LAG.remove(str(tp.partition))
            except KeyError:
                pass

    def fenced(self, part: Partition, exc: BaseException, doing: str) -> None:
        """Our producer of ``part`` was fenced (another owner, or the broker timed our transaction
        out): stop using the partition and reopen it if it is still ours. Once per fence, whoever
        sees it first (a batch, the janitor or a Batch API completion)."""
        if part.lost:
            return
        part.lost = True
        metrics.TRANSACTIONS.labels("fenced").inc()
        log.warning("partition %s: fenced (%s); %s", part.tp, type(exc).__name__, doing)
        task = asyncio.create_task(self.reopen_if_still_ours(part), name=f"reopen-{part.tp.partition}")
        self._reopening.add(task)
        task.add_done_callback(self._reopening.discard)

    async def reopen_if_still_ours(self, part: Partition) -> None:
        """After a fence without a rebalance (e.g. the broker timed our transaction out), reopen.

        Wait one session timeout first: if another worker owns the partition, our consumer learns
        it in that time and the revoke removes the partition instead. Reopening runs the normal
        assignment path: new producer (fences any zombie), restore, seek to the committed offset.
        """
        await asyncio.sleep(self.config.kafka.session_timeout_ms / 1000)
        if self.stopping or self.consumer is None or self.parts.get(part.tp) is not part:
            return
        if part.tp not in self.consumer.assignment():
            return
        log.warning("partition %s: still assigned after being fenced; reopening it", part.tp)
        await self.revoke([part.tp])
        await self.assign([part.tp])
