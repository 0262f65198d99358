"""Exactly-once request processing on aiokafka: consume → route → call → produce, one transaction.

Why our own loop and not Faust's ``exactly_once``: measured broken under kill -9 (duplicates,
lost records, local state ahead of Kafka; docs/faust-eos-defects.md). This is the textbook
KIP-98 loop, the one Kafka Streams runs per task:

* **One transactional producer per input partition** (``transactional.id`` =
  ``<group>.<topic>.<partition>``). When a partition moves, its new owner's
  ``init_transactions`` fences the old owner (a zombie can no longer commit) and aborts its
  open transaction before the new owner reads the committed offset.
* **One transaction per partition batch**: the responses, audit records and dead letters of the
  batch, the decision-table changelog writes, and the consumed offset commit or abort together.
  Model calls happen *before* the transaction begins, so transactions stay short.
* **Local state never ahead of Kafka**: the RocksDB store is written only after the commit,
  with the changelog offset it reflects; on assignment it is replayed from that checkpoint.
* **Per-key order**: records of the same key (or request id) run in order; other keys run
  concurrently, bounded by ``worker.max_in_flight``. Up to ``worker.batches_in_flight`` fetched
  batches of a partition are handled at once (a same-key chain waits for the one in the batch
  before; each batch reads the uncommitted state of the one before), so a slow record holds
  back its own key, not the partition; batches commit strictly in offset order, and a failed
  commit discards the batches after it too.
* **No silent failure**: a failed commit is aborted and the batch is re-read; if the abort fails
  too, the processor stops loudly (the worker exits non-zero and its supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.protocol.commit import OffsetFetchRequest

from .. import metrics
from ..budgets.totals import ChangelogTotals
from ..config import RouterConfig
from ..schemas import Request
from ..kafka_settings import client_settings
from ..state.store import PartitionStore
from .gate import Gate
from .slots import OrderedSlots
from .control import ControlCommand
from .handler import Handler, Outcome, Source, StateView, output_budget
from .intake import Poison
from .janitor import run_janitor

log = logging.getLogger(__name__)

FENCED = (ProducerFenced, InvalidProducerEpoch)


class FatalProcessorError(RuntimeError):
    """The processor cannot continue safely; the worker must stop (and be restarted)."""


@dataclass(slots=True)
class _Batch:
    """One fetched run of a partition's records, from handling to its commit."""

    records: list[Any]
    view: StateView
    gen: int
    done: asyncio.Future[bool]  # True once committed; False if failed or discarded
    seq: int = 0  # dispatch number: the oldest batch gets in-flight slots first
    task: asyncio.Task[None] | None = None
    tails: list[tuple[str, asyncio.Task[None]]] = field(default_factory=list)
    in_txn: bool = False  # its transaction has begun (a cancel must abort it)


@dataclass(slots=True)
class _Partition:
    tp: TopicPartition
    producer: AIOKafkaProducer
    store: PartitionStore
    next_offset: int = 0  # committed
    dispatched: int = 0  # next offset to hand to a batch
    inflight: list[_Batch] = field(default_factory=list)  # in offset order
    tails: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # order token -> last chain
    gen: int = 0  # bumped when a failure discards the batches in flight
    held_until: float = 0.0  # stay paused until then (after a failed commit)
    rewinding: bool = False  # a failed batch is aborting; nothing is dispatched until it has sought back
    lost: bool = False
    gate: Gate = field(default_factory=Gate)
    jobs_task: asyncio.Task[None] | None = None
    janitor_task: asyncio.Task[None] | None = None


class _Discarded(Exception):
    """A batch behind a failed one: its records are re-read, its results thrown away."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, processor: "Processor") -> None:
        self._p = processor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._p._revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._p._assign(list(assigned))


def _tokens(scope: str, rid: str | None, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Order tokens of a record: its scope key, its request id, and ``extra`` (budget scopes)."""
    return ((f"k\x00{scope}", f"r\x00{rid}") if rid else (f"k\x00{scope}",)) + extra


def _group(keys: list[tuple[Any, ...]]) -> list[list[int]]:
    """Indices of records that must run in order: same scope key, request id or budget scope."""
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        for token in _tokens(*key):
            if token in seen:
                parent[find(i)] = find(seen[token])
            else:
                seen[token] = i
    chains: dict[int, list[int]] = {}
    for i in range(len(keys)):
        chains.setdefault(find(i), []).append(i)
    return list(chains.values())


class Processor:
    """Runs the request path for the partitions this worker owns. ``start`` / ``stop``."""

    def __init__(self, config: RouterConfig, handler: Handler, worker_id: str,
                 on_fatal: Callable[[BaseException], Awaitable[None] | None] | None = None) -> None:
        self.config = config
        self.handler = handler
        self.worker_id = worker_id
        self.topics = config.topics
        self._on_fatal = on_fatal
        self._parts: dict[TopicPartition, _Partition] = {}
        self._opening: dict[TopicPartition, asyncio.Task[None]] = {}
        self._standby: dict[int, PartitionStore] = {}
        self._standby_lock = asyncio.Lock()
        self._standby_task: asyncio.Task[None] | None = None
        self._slots = OrderedSlots(config.worker.max_in_flight)
        self._batch_seq = 0
        self._restore_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._restorer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rebalancing = False
        self.assigned_once = asyncio.Event()
        self.records_done = 0
        self.restored_records = 0
        self.restored_on_assign = 0
        self.first_answer_at: float | None = None
        self.fatal: BaseException | None = None
        self._batch_clients: dict[str, Any] = {}
        self._totals: ChangelogTotals | None = None
        batch_mode = [n for n, c in config.candidates.items() if c.mode == "batch"]
        if batch_mode:
            from ..providers.batch_api import BatchAPIClient
            self._batch_clients = {n: BatchAPIClient(n, config.candidates[n]) for n in batch_mode}

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        """Assigned at least once, restored, not rebalancing, not failed."""
        return (self.assigned_once.is_set() and not self._rebalancing and not self._opening
                and self.fatal is None and not self._stopping)

    def owned_store(self, partition: int) -> PartitionStore | None:
        """The committed state of a requests partition this worker owns and has opened (None
        otherwise), for read-only views such as the ``/state`` endpoint: the store is written only
        after a transaction committed, so it never shows uncommitted writes."""
        part = self._parts.get(TopicPartition(self.topics.requests, partition))
        return part.store if part is not None and not part.lost else None

    def partition_count(self) -> int | None:
        """How many partitions the requests topic has, from the consumer's metadata (None before it has any)."""
        parts = self._consumer.partitions_for_topic(self.topics.requests) if self._consumer is not None else None
        return len(parts) if parts else None

    async def start(self) -> None:
        kafka = self.config.kafka
        common = client_settings(kafka)
        self._restorer = AIOKafkaConsumer(
            **common, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
        await self._restorer.start()
        self._consumer = AIOKafkaConsumer(
            **common, group_id=kafka.group_id, enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(1000, kafka.session_timeout_ms // 3),
            max_poll_interval_ms=max(300_000, kafka.transaction_timeout_ms * 2),
            rebalance_timeout_ms=max(60_000, int(self.config.worker.shutdown_grace_s * 1000) + 30_000),
            client_id=f"router-stream-{self.worker_id}")
        await self._consumer.start()
        ledger = self.handler.ledger
        if ledger is not None and any(not b.co_partitioned for b in ledger.budgets):
            # spread budgets: other partitions' committed spend, from the changelog (budgets/totals.py)
            self._totals = ChangelogTotals(common, self.topics.changelog)
            await self._totals.start()
            ledger.remote = self._totals
            await asyncio.wait_for(self._totals.caught_up.wait(), timeout=120)
        self._consumer.subscribe([self.topics.requests], listener=_Listener(self))
        self._loop_task = asyncio.create_task(self._run(), name="router-stream-processor")
        if self.config.worker.standby:
            self._standby_task = asyncio.create_task(self._standby_loop(), name="router-stream-standby")

    async def stop(self) -> None:
        """Graceful: stop fetching, let in-flight batches commit (bounded), leave the group."""
        self._stopping = True
        for task in list(self._opening.values()):
            task.cancel()
        await asyncio.gather(*self._opening.values(), return_exceptions=True)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._drain(list(self._parts), self.config.worker.shutdown_grace_s)
        if self._consumer is not None:
            try:
                await self._consumer.stop()  # leaves the group; our revoke handler closes partitions
            except Exception as exc:
                log.warning("consumer stop: %s", exc)
        await self._close_partitions(list(self._parts))
        if self._standby_task is not None:
            self._standby_task.cancel()
            await asyncio.gather(self._standby_task, return_exceptions=True)
        for store in self._standby.values():
            store.close()
        self._standby.clear()
        if self._restorer is not None:
            await self._restorer.stop()
        if self._totals is not None:
            await self._totals.stop()
        for client in self._batch_clients.values():
            await client.aclose()

    # ------------------------------------------------------------------ rebalance
    async def _assign(self, tps: list[TopicPartition]) -> None:
        """Pause the new partitions and open them in the background.

        aiokafka stops heartbeating while this callback runs (group_coordinator.py), and opening
        a partition (init_transactions, changelog restore) can take seconds under load: done
        inline it made workers miss their session and rebalance again. The partitions stay
        paused until their producer is fenced-in, their state restored and their offset sought.
        """
        assert self._consumer is not None
        mine = [tp for tp in tps if tp.topic == self.topics.requests and tp not in self._parts
                and tp not in self._opening]
        if mine:
            self._consumer.pause(*mine)
        for tp in mine:
            self._opening[tp] = asyncio.create_task(self._open_and_resume(tp), name=f"open-{tp.partition}")
        self._rebalancing = False
        self.assigned_once.set()

    async def _open_and_resume(self, tp: TopicPartition) -> None:
        started = time.monotonic()
        try:
            await self._open_with_retry(tp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._die(exc)
            return
        finally:
            self._opening.pop(tp, None)
        metrics.ASSIGNED.set(len(self._parts))
        log.info("opened partition %d in %.2fs", tp.partition, time.monotonic() - started)
        if self._consumer is not None and tp in self._consumer.assignment() and not self._stopping:
            self._consumer.resume(tp)

    async def _open_with_retry(self, tp: TopicPartition, attempts: int = 6) -> None:
        """Open a partition; a broker restart in the middle is retried (1, 2, 4, 8, 16 s) before we die."""
        for attempt in range(attempts):
            try:
                await self._open_partition(tp)
                return
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("opening %s failed (%s: %s); retrying", tp, type(exc).__name__, exc)
                await asyncio.sleep(2 ** attempt)

    async def _open_partition(self, tp: TopicPartition) -> None:
        assert self._consumer is not None
        kafka = self.config.kafka
        producer = AIOKafkaProducer(
            **client_settings(kafka), transactional_id=f"{kafka.group_id}.{tp.topic}.{tp.partition}",
            enable_idempotence=True, acks="all", transaction_timeout_ms=kafka.transaction_timeout_ms,
            linger_ms=2, client_id=f"router-stream-{self.worker_id}-p{tp.partition}")
        store: PartitionStore | None = None
        try:
            await producer.start()  # init_transactions: fences the previous owner, ends its transaction
            await self._release_standby(tp.partition)  # one RocksDB handle per store and process
            store = await asyncio.to_thread(PartitionStore, self._state_dir(tp.partition))
            self.restored_on_assign += await self._restore(tp.partition, store)
            committed = await self._committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
                next_offset = 0
            else:
                self._consumer.seek(tp, committed)
                next_offset = committed
        except BaseException:  # including cancellation by a revoke: release what we opened
            await producer.stop()
            if store is not None:
                store.close()
            raise
        part = _Partition(tp, producer, store, next_offset, dispatched=next_offset)
        self._parts[tp] = part
        part.janitor_task = asyncio.create_task(run_janitor(self, part))
        if self._batch_clients:
            from .batch_jobs import PartitionJobs
            part.jobs_task = asyncio.create_task(PartitionJobs(self, part, self._batch_clients).run())

    async def _committed(self, tp: TopicPartition, timeout: float = 120) -> int | None:
        """The group's committed offset of ``tp``; None only when the broker says there is none.

        Not ``AIOKafkaConsumer.committed()``: aiokafka 0.14 sends OffsetFetch v3 and ignores the
        response's top-level ``error_code``. While a broker shuts down, restarts or hands the group
        coordinator to another broker, it answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS
        there with no partitions, and ``committed()`` returns None: we would take that for "never
        committed" and re-read the whole partition from offset 0 (tests/integration/test_chaos.py).
        """
        assert self._consumer is not None
        coordinator = self._consumer._coordinator  # noqa: SLF001 - no public call checks that error
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            try:
                await asyncio.wait_for(coordinator.ensure_coordinator_known(), 5)
                response = await coordinator._send_req(  # noqa: SLF001
                    OffsetFetchRequest(self.config.kafka.group_id, [(tp.topic, [tp.partition])]))
                codes = [getattr(response, "error_code", 0)]
                found, offset = False, -1
                for topic, parts in response.topics:
                    for partition, off, _metadata, code in parts:
                        if topic == tp.topic and partition == tp.partition:
                            found, offset = True, off
                            codes.append(code)
                error = next((kafka_errors.for_code(c) for c in codes if c), None)
                if error is not None:
                    if error in (kafka_errors.NotCoordinatorForGroupError,
                                 kafka_errors.GroupCoordinatorNotAvailableError):
                        coordinator.coordinator_dead()
                    raise error()
                if found:
                    return None if offset < 0 else offset
            except (KafkaError, asyncio.TimeoutError) as exc:
                if isinstance(exc, KafkaError) and not exc.retriable:
                    raise
                if not logged:
                    log.info("committed offset of %s not available yet (%s); asking again", tp, type(exc).__name__)
                    logged = True
            if self._stopping:
                raise asyncio.CancelledError()
            if time.monotonic() > deadline:
                raise kafka_errors.KafkaTimeoutError(f"no committed offset for {tp} within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    def _state_dir(self, partition: int) -> Path:
        group = self.config.kafka.group_id
        return Path(self.config.cache.state_dir) / group / f"{self.topics.requests}-{partition}"

    async def _standby_loop(self) -> None:
        """Keep a warm copy of every partition this worker does not own (``worker.standby``).

        The copy is the same RocksDB store with the same checkpoint, fed from the committed
        (read_committed) changelog, so it is never ahead of Kafka; when the partition is assigned
        here, opening it replays only what the copy has not seen yet.
        """
        while not self._stopping:
            await asyncio.sleep(self.config.worker.standby_interval_s)
            assert self._consumer is not None
            try:
                for partition in sorted(self._consumer.partitions_for_topic(self.topics.requests) or ()):
                    tp = TopicPartition(self.topics.requests, partition)
                    async with self._standby_lock:
                        if tp in self._parts or tp in self._opening:
                            continue
                        store = self._standby.get(partition)
                        if store is None:
                            store = await asyncio.to_thread(PartitionStore, self._state_dir(partition))
                            self._standby[partition] = store
                        await self._restore(partition, store)
                metrics.STANDBY.set(len(self._standby))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("standby update failed (%s: %s); will try again", type(exc).__name__, exc)

    async def _release_standby(self, partition: int) -> None:
        async with self._standby_lock:
            store = self._standby.pop(partition, None)
            if store is not None:
                await asyncio.to_thread(store.close)
                metrics.STANDBY.set(len(self._standby))

    async def _restore(self, partition: int, store: PartitionStore) -> int:
        """Bring the local store up to the committed changelog (replay from its checkpoint).

        Returns the number of changelog records replayed."""
        assert self._restorer is not None
        tp = TopicPartition(self.topics.changelog, partition)
        async with self._restore_lock:
            c = self._restorer
            c.assign([tp])
            end = (await c.end_offsets([tp]))[tp]
            begin = (await c.beginning_offsets([tp]))[tp]
            start = store.checkpoint
            if start is None or start > end or start < begin:
                if start is not None:
                    log.warning("changelog %s checkpoint %s outside [%s, %s]: rebuilding", tp, start, begin, end)
                    await asyncio.to_thread(store.wipe)
                start = begin
            if start >= end:
                return 0
            c.seek(tp, start)
            writes: dict[bytes, bytes | None] = {}
            deadline = time.monotonic() + 300
            count = 0
            while await c.position(tp) < end:
                if time.monotonic() > deadline:
                    raise FatalProcessorError(f"restoring {tp} did not reach offset {end} in 300 s")
                batch = await c.getmany(tp, timeout_ms=500, max_records=10_000)
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        break
                    writes[record.key] = record.value
                    count += 1
                if len(writes) >= 50_000:
                    await asyncio.to_thread(store.apply, writes, await c.position(tp))
                    writes = {}
            await asyncio.to_thread(store.apply, writes, end)
            log.info("restored %s: %d changelog records from offset %d to %d", tp, count, start, end)
            self.restored_records += count
            return count

    async def _revoke(self, tps: list[TopicPartition]) -> None:
        self._rebalancing = True
        opening = [task for tp in tps if (task := self._opening.pop(tp, None)) is not None]
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        mine = [tp for tp in tps if tp in self._parts]
        await self._drain(mine, self.config.worker.shutdown_grace_s)
        await self._close_partitions(mine)
        metrics.ASSIGNED.set(len(self._parts))

    async def _drain(self, tps: list[TopicPartition], timeout: float) -> None:
        tasks = [b.task for tp in tps if (p := self._parts.get(tp))
                 for b in p.inflight if b.task is not None and not b.task.done()]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:  # abandoned: their records are re-read by the next owner
            task.cancel()
        if pending:
            log.warning("cancelled %d in-flight batches after %.1fs; they will be reprocessed", len(pending), timeout)
            await asyncio.gather(*pending, return_exceptions=True)

    async def _close_partitions(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            helpers = [t for t in (part.jobs_task, part.janitor_task) if t is not None]
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await part.producer.stop()
            except Exception as exc:
                log.warning("closing producer of %s: %s", tp, exc)
            await asyncio.to_thread(part.store.close)
            try:
                metrics.LAG.remove(str(tp.partition))
            except KeyError:
                pass

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        last_lag = 0.0
        try:
            while not self._stopping:
                data = await consumer.getmany(timeout_ms=100, max_records=self.config.kafka.max_batch)
                for tp, records in data.items():
                    part = self._parts.get(tp)
                    if part is None or part.lost or part.rewinding:
                        continue
                    if len(part.inflight) >= self.config.worker.batches_in_flight:
                        consumer.seek(tp, records[0].offset)  # never drop: re-read when a slot frees
                        consumer.pause(tp)
                        continue
                    records = [r for r in records if r.offset >= part.dispatched]
                    if not records:
                        continue
                    self._dispatch(part, records)
                if self.fatal is not None:
                    raise self.fatal
                now = time.monotonic()
                if now - last_lag > 5:
                    last_lag = now
                    self._update_lag()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._die(exc)
            raise

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp, part in self._parts.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(str(tp.partition)).set(max(0, high - part.next_offset))

    async def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.critical("processor stopping: %s: %s", type(exc).__name__, exc)
            if self._on_fatal is not None:
                result = self._on_fatal(exc)
                if asyncio.iscoroutine(result):
                    await result

    def _dispatch(self, part: _Partition, records: list[Any]) -> None:
        """Start a batch of ``part``; pause the partition when its batches-in-flight budget is used.

        The batch reads state through a view over the previous in-flight batch's view (its
        uncommitted writes), or over the store when none is in flight.
        """
        prev = part.inflight[-1] if part.inflight else None
        view = StateView(prev.view if prev is not None else part.store)
        self._batch_seq += 1
        batch = _Batch(records, view, part.gen, asyncio.get_running_loop().create_future(), seq=self._batch_seq)
        part.inflight.append(batch)
        part.dispatched = records[-1].offset + 1
        batch.task = asyncio.create_task(self._process(part, batch, prev))
        if len(part.inflight) >= self.config.worker.batches_in_flight and self._consumer is not None:
            self._consumer.pause(part.tp)

    async def _process(self, part: _Partition, batch: _Batch, prev: _Batch | None) -> None:
        """Handle a batch, wait for the batch before it to commit, then commit this one.

        Batches of a partition are handled concurrently but commit strictly in offset order, so
        the committed offset only ever covers fully answered records. If a commit fails, that
        batch and every batch after it are discarded and re-read from its first offset.
        """
        records = batch.records
        started = time.monotonic()
        try:
            async with part.gate.shared():
                outcomes = await self._handle_all(part, batch)
                if prev is not None and not await asyncio.shield(prev.done):
                    raise _Discarded()
                if part.gen != batch.gen or part.lost:
                    raise _Discarded()
                await self._commit(part, batch, outcomes)
            self._settle(part, batch, True)
            metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        except _Discarded:
            self._settle(part, batch, False)
        except asyncio.CancelledError:
            self._settle(part, batch, False)
            if batch.in_txn:
                await self._abort_quietly(part)
            raise
        except FENCED as exc:
            self._settle(part, batch, False)
            self._fenced(part, exc, "dropping this batch, it will be re-read")
            return
        except FatalProcessorError as exc:
            self._settle(part, batch, False)
            await self._die(exc)
            return
        except Exception as exc:
            self._settle(part, batch, False)
            log.error("partition %s: batch at offset %d failed (%s: %s); it will be re-read",
                      part.tp, records[0].offset, type(exc).__name__, exc)
            rewind_to = self._discard_from(part, batch)
            for attempt in range(5 if batch.in_txn else 0):  # the broker may be restarting: give it a moment
                try:
                    await part.producer.abort_transaction()
                    metrics.TRANSACTIONS.labels("abort").inc()
                    break
                except FENCED as fenced:
                    self._fenced(part, fenced, "while aborting")
                    return
                except Exception as abort_exc:
                    if "Not in the middle" in str(abort_exc) or "not in transaction" in str(abort_exc).lower():
                        break
                    if attempt == 4:
                        await self._die(FatalProcessorError(
                            f"abort after a failed commit failed on {part.tp}: {type(abort_exc).__name__}: {abort_exc}"))
                        return
                    await asyncio.sleep(2.0 * (attempt + 1))
            if self._consumer is not None and part.tp in self._parts:
                self._consumer.seek(part.tp, rewind_to)
            part.held_until = time.monotonic() + 1.0
            part.rewinding = False
            await asyncio.sleep(1.0)
        finally:
            self._maybe_resume(part)

    def _settle(self, part: _Partition, batch: _Batch, committed: bool) -> None:
        """Record the batch's fate (the next batch waits on it) and drop it from the partition."""
        if not batch.done.done():
            batch.done.set_result(committed)
        if batch in part.inflight:
            part.inflight.remove(batch)
        for token, task in batch.tails:
            if part.tails.get(token) is task:
                del part.tails[token]
        if committed:  # its writes are in the store now: later views stop going through it
            batch.view.store, batch.view.pending = part.store, {}

    def _discard_from(self, part: _Partition, failed: _Batch) -> int:
        """After ``failed`` failed: the batches in flight after it are void, the partition
        rewinds; returns the offset to seek to.

        When the commit failed, ``failed`` was the oldest batch in flight (each waits for the one
        before it to commit first), so the others are all later and none has begun a transaction.
        A batch that failed *before* its commit (a bug: a record's content never makes handling
        raise) may have earlier batches still in flight. One of those that is committing
        (``in_txn``) is left to finish: its commit cannot be called back (aiokafka shields it), so
        cancelling it would re-read records whose answers are already out. It stays in
        ``inflight``, so what is dispatched next waits for it and reads its writes. The other
        earlier ones are void too, and the rewind goes to the first offset of the oldest batch
        voided, so no record is skipped. Nothing new is dispatched until the consumer has sought
        back (``rewinding``)."""
        part.gen += 1
        part.rewinding = True
        if self._consumer is not None and part.tp in self._consumer.assignment():
            self._consumer.pause(part.tp)
        first = failed.records[0].offset
        committing = [b for b in part.inflight if b.in_txn and b.records[0].offset < first]
        rewind_to = first
        for other in part.inflight:
            if other is failed or other in committing:
                continue
            if other.task is not None:
                other.task.cancel()
            rewind_to = min(rewind_to, other.records[0].offset)
        part.inflight[:] = committing
        part.tails.clear()  # a committing batch's chains have all finished
        part.dispatched = rewind_to
        return rewind_to

    def _maybe_resume(self, part: _Partition) -> None:
        if self._stopping or part.lost or part.rewinding or self._consumer is None or part.tp not in self._parts \
                or part.tp not in self._consumer.assignment() or part.tp in self._opening:
            return
        if time.monotonic() < part.held_until or len(part.inflight) >= self.config.worker.batches_in_flight:
            return
        self._consumer.resume(part.tp)

    def _fenced(self, part: _Partition, exc: BaseException, doing: str) -> None:
        """Our producer of ``part`` was fenced (another owner, or the broker timed our transaction
        out): stop using the partition and reopen it if it is still ours. Once per fence, whoever
        sees it first (a batch, the janitor or a Batch API completion)."""
        if part.lost:
            return
        part.lost = True
        metrics.TRANSACTIONS.labels("fenced").inc()
        log.warning("partition %s: fenced (%s); %s", part.tp, type(exc).__name__, doing)
        asyncio.create_task(self._reopen_if_still_ours(part))

    async def _reopen_if_still_ours(self, part: _Partition) -> None:
        """After a fence without a rebalance (e.g. the broker timed our transaction out), reopen.

        Wait one session timeout first: if another worker owns the partition, our consumer learns
        it in that time and the revoke removes the partition instead. Reopening runs the normal
        assignment path: new producer (fences any zombie), restore, seek to the committed offset.
        """
        await asyncio.sleep(self.config.kafka.session_timeout_ms / 1000)
        if self._stopping or self._consumer is None or self._parts.get(part.tp) is not part:
            return
        if part.tp not in self._consumer.assignment():
            return
        log.warning("partition %s: still assigned after being fenced; reopening it", part.tp)
        await self._revoke([part.tp])
        await self._assign([part.tp])

    async def _abort_quietly(self, part: _Partition) -> None:
        try:
            await asyncio.wait_for(part.producer.abort_transaction(), 10)
        except Exception:
            pass

    async def _handle_all(self, part: _Partition, batch: _Batch) -> list[Outcome]:
        """Handle a batch's records: same key (or request id) in order, others concurrently.

        A chain of same-key records first waits for the chain of an earlier in-flight batch
        that holds any of its order tokens, so per-key order also holds across batches.
        """
        records, view = batch.records, batch.view
        sources = [Source(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
                   for r in records]
        keys = []
        # a field/expression scope needs the parsed request for the order token; parse it and work
        # out its scope key once here and hand both to the handler (the Kafka-key scope needs
        # neither before the handler's own)
        parsed: list[Request | Poison | ControlCommand | None] = [None] * len(sources)
        scopes: list[str | None] = [None] * len(sources)
        ledger = self.handler.ledger
        by_key = self.config.cache.scope == "key" and (ledger is None or not ledger.needs_request_for_order)
        for i, s in enumerate(sources):
            if not by_key:
                parsed[i] = self.handler.classify(s)
            request = parsed[i] if isinstance(parsed[i], (Request, ControlCommand)) else None
            try:
                scope = self.handler.scope_key(s, request)
            except Exception:  # never for a record's content; if it does, order by offset, not crash
                log.exception("scope key of %s[%d]@%d failed; ordering it by offset", s.topic, s.partition, s.offset)
                scope = f"offset:{s.partition}:{s.offset}"
            else:
                if request is not None:
                    scopes[i] = scope  # the handler's key for this very request
            extra = tuple(self.handler.budget_tokens(s, request)) if ledger is not None else ()
            keys.append((scope, request.request_id if isinstance(request, Request) else _peek_id(s.value), extra))
        outcomes: list[Outcome | None] = [None] * len(records)

        async def chain(indices: list[int], before: list[asyncio.Task[None]]) -> None:
            if before:
                await asyncio.gather(*before, return_exceptions=True)
            for i in indices:
                async with self._slots.slot(batch.seq):
                    metrics.IN_FLIGHT.inc()
                    try:
                        outcomes[i] = await self.handler.handle(sources[i], view, parsed[i], scopes[i])
                    finally:
                        metrics.IN_FLIGHT.dec()

        tasks = []
        for indices in _group(keys):
            tokens = {t for i in indices for t in _tokens(*keys[i])}
            before = list({id(t): t for tok in tokens if (t := part.tails.get(tok)) is not None
                           and not t.done()}.values())
            task = asyncio.create_task(chain(indices, before))
            tasks.append(task)
            if part.gen == batch.gen:
                for tok in tokens:
                    part.tails[tok] = task
                    batch.tails.append((tok, task))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [o for o in outcomes if o is not None]

    def _serialize(self, records: list[Any], outcomes: list[Outcome]) -> list[list[tuple[str, bytes]]]:
        """JSON of every output, before the transaction begins.

        A record whose outputs cannot be serialized (e.g. a model answer with a lone surrogate)
        becomes an ``internal_error`` dead letter instead: a batch that can never be produced
        would otherwise be aborted and re-read forever and stall its partition.
        """
        t = self.topics
        out: list[list[tuple[str, bytes]]] = []
        for record, outcome in zip(records, outcomes):
            problem = None
            try:
                values = []
                if outcome.response is not None:
                    values.append((t.responses, outcome.response.model_dump_json(exclude_none=True).encode()))
                if outcome.audit is not None:
                    values.append((t.audit, outcome.audit.model_dump_json(exclude_none=True).encode()))
                if outcome.dead_letter is not None:
                    values.append((t.dead_letter, outcome.dead_letter.model_dump_json(exclude_none=True).encode()))
            except (ValueError, TypeError, UnicodeError) as exc:
                problem = (f"the answer could not be serialized ({type(exc).__name__})", type(exc).__name__)
            else:  # the handler keeps answers within a record; anything else too big is a bug, not a stall
                budget = output_budget(record.key)
                big = next(((topic, len(v)) for topic, v in values if len(v) > budget), None)
                if big is not None:
                    problem = (f"the {big[0]} record would be {big[1]} bytes, over the {budget}-byte limit", "RecordTooLarge")
            if problem is not None:
                log.error("%s[%d]@%d: %s; dead-lettering it", record.topic, record.partition, record.offset, problem[0])
                source = Source(record.topic, record.partition, record.offset, record.key, record.value)
                dead = self.handler.dead_letter(source, Poison("internal_error", problem[0]),
                                                error_class=problem[1]).dead_letter
                assert dead is not None
                values = [(t.dead_letter, dead.model_dump_json(exclude_none=True).encode())]
            out.append(values)
        return out

    async def _commit(self, part: _Partition, batch: _Batch, outcomes: list[Outcome]) -> None:
        producer = part.producer
        t = self.topics
        records, view = batch.records, batch.view
        payloads = self._serialize(records, outcomes)
        batch.in_txn = True
        await producer.begin_transaction()
        for record, values in zip(records, payloads):
            headers = [(k, v) for k, v in (record.headers or ()) if k.lower() in _TRACE]
            for topic, value in values:
                await producer.send(topic, key=record.key, value=value,
                                    headers=headers if topic != t.dead_letter else None)
        changelog = [await producer.send(t.changelog, key=k, value=v, partition=part.tp.partition)
                     for k, v in view.pending.items()]
        next_offset = records[-1].offset + 1
        await producer.send_offsets_to_transaction({part.tp: next_offset}, self.config.kafka.group_id)
        await producer.commit_transaction()
        metrics.TRANSACTIONS.labels("commit").inc()
        part.next_offset = next_offset
        if changelog:
            metas = await asyncio.gather(*changelog)
            await asyncio.to_thread(part.store.apply, view.pending, max(m.offset for m in metas) + 1)
        self.records_done += len(records)
        if self.first_answer_at is None:
            self.first_answer_at = time.time()


    async def _transact(self, part: _Partition, outputs: list[tuple[str, bytes | None, bytes]],
                        writes: dict[bytes, bytes | None]) -> None:
        """A transaction without consumed offsets (Batch API completions): outputs + changelog."""
        producer = part.producer
        await producer.begin_transaction()
        try:
            for topic, key, value in outputs:
                await producer.send(topic, key=key, value=value)
            changelog = [await producer.send(self.topics.changelog, key=k, value=v, partition=part.tp.partition)
                         for k, v in writes.items()]
            await producer.commit_transaction()
        except FENCED as exc:
            self._fenced(part, exc, "a janitor or Batch API transaction was refused")
            raise
        except BaseException:
            await self._abort_quietly(part)
            raise
        metrics.TRANSACTIONS.labels("commit").inc()
        if changelog:
            metas = await asyncio.gather(*changelog)
            await asyncio.to_thread(part.store.apply, writes, max(m.offset for m in metas) + 1)


_TRACE = ("traceparent", "tracestate", "baggage", "x-request-id", "x-b3-traceid")


def _peek_id(value: bytes | None) -> str | None:
    """The request_id of a record without full validation (for ordering duplicates); None if absent."""
    if not value or len(value) > 10_000_000:
        return None
    try:
        data = json.loads(value)
    except Exception:
        return None
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) else None
