"""Changelog restore: bring a partition's local store up to its committed changelog; standby copies.

A partition's RocksDB store (``state/store.py``) is written only after a commit, with the
changelog offset it reflects (its checkpoint). Opening the partition replays the changelog from
that checkpoint to the end of what is committed; ``worker.standby`` keeps warm copies of the
partitions owned elsewhere, fed the same way, so a failover replays only what the copy missed.

What one open costs here is paid once per partition, so it is shaped for hundreds of them
(bench/partitions.py, docs/operations.md "Partitions per worker"):

* the changelog bounds (beginning and end offsets) of every partition opening at the same time
  are asked in **one** ListOffsets request each, not two per partition;
* a partition whose store is already at the end (a fresh topic, a warm standby, a restart of the
  same worker: its checkpoint is then one short of the end, the commit marker) reads nothing;
* the reader long-polls for 20 ms, not aiokafka's 500 ms: Kafka answers a connection's requests
  in order, so each restore used to wait behind the reader's previous idle fetch (measured: 0.5 s
  per partition, one after another: 61 s to open 120 partitions);
* after a restore the partition is paused on the reader, so an idle reader sends no fetches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import metrics
from ..config import RouterConfig
from ..kafka_settings import client_settings
from ..state.store import PartitionStore
from .partition import FatalProcessorError

log = logging.getLogger(__name__)

#: How long a restore may take before the worker gives up on the partition.
RESTORE_TIMEOUT_S = 300


def state_dir(config: RouterConfig, partition: int) -> Path:
    """Where the local store of a requests partition lives (one directory per group and partition)."""
    return Path(config.cache.state_dir) / config.kafka.group_id / f"{config.topics.requests}-{partition}"


class ChangelogRestorer:
    """One read_committed reader of the changelog topic, shared by every partition of the worker."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.topic = config.topics.changelog
        self.restored_records = 0
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one partition read at a time: the reader has one assignment
        self._wanted: dict[int, list[asyncio.Future[tuple[int, int]]]] = {}
        self._lookup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = AIOKafkaConsumer(
            **client_settings(self.config.kafka),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=20,
        )
        await self._reader.start()

    async def stop(self) -> None:
        if self._lookup is not None:
            self._lookup.cancel()
            await asyncio.gather(self._lookup, return_exceptions=True)
        if self._reader is not None:
            await self._reader.stop()

    async def bounds(self, partition: int) -> tuple[int, int]:
        """The (beginning, end) offsets of the partition's committed changelog.

        Callers waiting at the same time share one lookup: a rebalance that hands this worker
        480 partitions asks the broker twice, not 960 times."""
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(partition, []).append(future)
        if self._lookup is None or self._lookup.done():
            self._lookup = asyncio.create_task(self._look_up(), name="router-stream-changelog-bounds")
        return await future

    async def _look_up(self) -> None:
        assert self._reader is not None
        wanted: dict[int, list[asyncio.Future[tuple[int, int]]]] = {}
        try:
            await asyncio.sleep(0)  # the other partitions of this wave queue theirs first
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                tps = [TopicPartition(self.topic, p) for p in wanted]
                try:  # both requests at once: one round trip, not two, for the whole wave
                    ends, begins = await asyncio.gather(
                        self._reader.end_offsets(tps), self._reader.beginning_offsets(tps)
                    )
                except Exception as exc:  # each opener retries or fails its own partition
                    for f in (f for futures in wanted.values() for f in futures):
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for partition, futures in wanted.items():
                    tp = TopicPartition(self.topic, partition)
                    for f in futures:
                        if not f.done():
                            f.set_result((begins[tp], ends[tp]))
        finally:  # cancelled (stop): nobody waits for ever
            for futures in (*wanted.values(), *self._wanted.values()):
                for f in futures:
                    f.cancel()

    async def restore(self, partition: int, store: PartitionStore) -> int:
        """Bring ``store`` up to the committed changelog (replay from its checkpoint).

        Call it after the partition's producer has fenced the previous owner, so the end it reads
        is final. Returns the number of changelog records replayed."""
        assert self._reader is not None
        tp = TopicPartition(self.topic, partition)
        begin, end = await self.bounds(partition)
        start = store.checkpoint
        if start is None or start > end or start < begin:
            if start is not None:
                log.warning("changelog %s checkpoint %s outside [%s, %s]: rebuilding", tp, start, begin, end)
                await asyncio.to_thread(store.wipe)
            start = begin
        if end - start <= 1:
            # Nothing to replay. One offset left is a transaction marker, not a record: only
            # transactional producers write the changelog, and a record in [start, end) would
            # come with its own commit or abort marker, also below the last stable offset ``end``.
            # The usual case (our commit's marker right after the checkpoint) used to cost a
            # fetch that returns no records: 0.5 s per partition on every restart.
            return 0
        async with self._lock:
            count = await self._replay(tp, store, start, end)
        log.info("restored %s: %d changelog records from offset %d to %d", tp, count, start, end)
        self.restored_records += count
        return count

    async def _replay(self, tp: TopicPartition, store: PartitionStore, start: int, end: int) -> int:
        c = self._reader
        assert c is not None
        c.assign([tp])
        c.seek(tp, start)
        writes: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        count = 0
        try:
            while await c.position(tp) < end:
                if time.monotonic() > deadline:
                    raise FatalProcessorError(
                        f"restoring {tp} did not reach offset {end} in {RESTORE_TIMEOUT_S} s"
                    )
                # short: a tail of transaction markers only yields no records, just a new position
                batch = await c.getmany(tp, timeout_ms=50, max_records=10_000)
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        break
                    writes[record.key] = record.value
                    count += 1
                if len(writes) >= 50_000:
                    await asyncio.to_thread(store.apply, writes, await c.position(tp))
                    writes = {}
            await asyncio.to_thread(store.apply, writes, end)
        finally:
            c.pause(tp)  # nothing more to read here: no idle fetches until the next assign
        return count


class StandbyCopies:
    """Warm copies of the partitions this worker does not own (``worker.standby``).

    The copy is the same RocksDB store with the same checkpoint, fed from the committed
    (read_committed) changelog, so it is never ahead of Kafka; when the partition is assigned
    here, opening it replays only what the copy has not seen yet."""

    def __init__(
        self,
        config: RouterConfig,
        restorer: ChangelogRestorer,
        partitions: Callable[[], set[int]],
        owned: Callable[[int], bool],
    ) -> None:
        self.config = config
        self._restorer = restorer
        self._partitions = partitions
        self._owned = owned
        self._stores: dict[int, PartitionStore] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="router-stream-standby")

    async def stop(self) -> None:
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    async def release(self, partition: int) -> None:
        """Close the copy of a partition about to be opened here (one RocksDB handle per store and process)."""
        async with self._lock:
            store = self._stores.pop(partition, None)
            if store is not None:
                await asyncio.to_thread(store.close)
                metrics.STANDBY.set(len(self._stores))

    async def _loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.config.worker.standby_interval_s)
            try:
                for partition in sorted(self._partitions()):
                    async with self._lock:
                        if self._owned(partition):
                            continue
                        store = self._stores.get(partition)
                        if store is None:
                            store = await asyncio.to_thread(PartitionStore, state_dir(self.config, partition))
                            self._stores[partition] = store
                        await self._restorer.restore(partition, store)
                metrics.STANDBY.set(len(self._stores))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("standby update failed (%s: %s); will try again", type(exc).__name__, exc)
