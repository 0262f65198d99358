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

This module is the loop itself, top to bottom: fetch (:meth:`Processor._run`) → handle
(:meth:`Processor._dispatch`, :meth:`Processor._process`) → commit in offset order
(:meth:`Processor._commit`), and what a failure discards. The roles around it live beside it:
``lifecycle.py`` opens and closes partitions (fencing, restore, standby), ``ordering.py`` runs a
batch's records in per-key chains, ``outputs.py`` makes the JSON of a batch's outputs (an output
that cannot be produced becomes a dead letter), ``transactions.py`` talks to the transactional
producer, and ``partition.py`` holds the partition and batch records they share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

from .. import metrics
from ..budgets.totals import ChangelogTotals
from ..config import RouterConfig
from ..kafka_settings import client_settings
from ..state.store import PartitionStore
from .handler import Handler
from .janitor import run_janitor
from .lifecycle import PartitionLifecycle
from .ordering import KeyOrdering
from .outputs import serialize_outputs
from .partition import FatalProcessorError, FetchBatch, Outcome, Partition, StateView
from .transactions import FENCED

log = logging.getLogger(__name__)

__all__ = ["FatalProcessorError", "Processor"]


class _Discarded(Exception):
    """A batch behind a failed one: its records are re-read, its results thrown away."""


class Processor:
    """Runs the request path for the partitions this worker owns. ``start`` / ``stop``."""

    def __init__(
        self,
        config: RouterConfig,
        handler: Handler,
        worker_id: str,
        on_fatal: Callable[[BaseException], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.worker_id = worker_id
        self.topics = config.topics
        self._on_fatal = on_fatal
        self.partitions = PartitionLifecycle(config, worker_id, self._start_helpers, self._die)
        self.ordering = KeyOrdering(config, handler)
        self._batch_seq = 0
        self._loop_task: asyncio.Task[None] | None = None
        self.records_done = 0
        self.first_answer_at: float | None = None
        self.fatal: BaseException | None = None
        self._batch_clients: dict[str, Any] = {}
        self._totals: ChangelogTotals | None = None
        batch_mode = [n for n, c in config.candidates.items() if c.mode == "batch"]
        if batch_mode:
            from ..providers.batch_api import BatchAPIClient

            self._batch_clients = {n: BatchAPIClient(n, config.candidates[n]) for n in batch_mode}

    # ------------------------------------------------------------------ what the worker sees
    @property
    def ready(self) -> bool:
        """Assigned at least once, restored, not rebalancing, not failed."""
        return (
            self.partitions.assigned_once.is_set()
            and self.partitions.settled
            and self.fatal is None
            and not self.partitions.stopping
        )

    @property
    def restored_records(self) -> int:
        return self.partitions.restored_records

    @property
    def restored_on_assign(self) -> int:
        return self.partitions.restored_on_assign

    def owned_store(self, partition: int) -> PartitionStore | None:
        """The committed state of a requests partition this worker owns and has opened (None
        otherwise), for read-only views such as the ``/state`` endpoint: the store is written only
        after a transaction committed, so it never shows uncommitted writes."""
        part = self.partitions.parts.get(TopicPartition(self.topics.requests, partition))
        return part.store if part is not None and not part.lost else None

    def partition_count(self) -> int | None:
        """How many partitions the requests topic has, from the consumer's metadata (None before it has any)."""
        consumer = self.partitions.consumer
        parts = consumer.partitions_for_topic(self.topics.requests) if consumer is not None else None
        return len(parts) if parts else None

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        await self.partitions.start()
        ledger = self.handler.ledger
        if ledger is not None and any(not b.co_partitioned for b in ledger.budgets):
            # spread budgets: other partitions' committed spend, from the changelog (budgets/totals.py)
            self._totals = ChangelogTotals(client_settings(self.config.kafka), self.topics.changelog)
            await self._totals.start()
            ledger.remote = self._totals
            await asyncio.wait_for(self._totals.caught_up.wait(), timeout=120)
        self.partitions.subscribe()
        self._loop_task = asyncio.create_task(self._run(), name="router-stream-processor")
        self.partitions.start_standby()

    async def stop(self) -> None:
        """Graceful: stop fetching, let in-flight batches commit (bounded), leave the group."""
        self.partitions.stopping = True
        await self.partitions.cancel_opening()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self.partitions.drain(list(self.partitions.parts), self.config.worker.shutdown_grace_s)
        await self.partitions.stop()
        if self._totals is not None:
            await self._totals.stop()
        for client in self._batch_clients.values():
            await client.aclose()

    def _start_helpers(self, part: Partition) -> None:
        """A newly opened partition's state maintenance: the janitor and, with Batch API
        candidates, its job loop. Both write through ``part.transactions``; closing the
        partition cancels them."""
        part.janitor_task = asyncio.create_task(run_janitor(part, self.config.cache))
        if self._batch_clients:
            from .batch_jobs import PartitionJobs

            part.jobs_task = asyncio.create_task(PartitionJobs(self, part, self._batch_clients).run())

    async def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.critical("processor stopping: %s: %s", type(exc).__name__, exc)
            if self._on_fatal is not None:
                result = self._on_fatal(exc)
                if asyncio.iscoroutine(result):
                    await result

    # ------------------------------------------------------------------ the loop: fetch
    async def _run(self) -> None:
        consumer = self.partitions.consumer
        assert consumer is not None
        parts = self.partitions.parts
        last_lag = 0.0
        try:
            while not self.partitions.stopping:
                data = await consumer.getmany(timeout_ms=100, max_records=self.config.kafka.max_batch)
                for tp, records in data.items():
                    part = parts.get(tp)
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
        consumer = self.partitions.consumer
        assert consumer is not None
        for tp, part in self.partitions.parts.items():
            high = consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(str(tp.partition)).set(max(0, high - part.next_offset))

    # ------------------------------------------------------------------ the loop: handle
    def _dispatch(self, part: Partition, records: list[Any]) -> None:
        """Start a batch of ``part``; pause the partition when its batches-in-flight budget is used.

        The batch reads state through a view over the previous in-flight batch's view (its
        uncommitted writes), or over the store when none is in flight.
        """
        prev = part.inflight[-1] if part.inflight else None
        view = StateView(prev.view if prev is not None else part.store)
        self._batch_seq += 1
        batch = FetchBatch(
            records, view, part.gen, asyncio.get_running_loop().create_future(), seq=self._batch_seq
        )
        part.inflight.append(batch)
        part.dispatched = records[-1].offset + 1
        batch.task = asyncio.create_task(self._process(part, batch, prev))
        consumer = self.partitions.consumer
        if len(part.inflight) >= self.config.worker.batches_in_flight and consumer is not None:
            consumer.pause(part.tp)

    async def _process(self, part: Partition, batch: FetchBatch, prev: FetchBatch | None) -> None:
        """Handle a batch, wait for the batch before it to commit, then commit this one.

        Batches of a partition are handled concurrently but commit strictly in offset order, so
        the committed offset only ever covers fully answered records. If a commit fails, that
        batch and every batch after it are discarded and re-read from its first offset.
        """
        records = batch.records
        started = time.monotonic()
        try:
            async with part.gate.shared():
                outcomes = await self.ordering.handle_batch(part, batch)
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
                await part.transactions.abort_quietly()
            raise
        except FENCED as exc:
            self._settle(part, batch, False)
            self.partitions.fenced(part, exc, "dropping this batch, it will be re-read")
            return
        except FatalProcessorError as exc:
            self._settle(part, batch, False)
            await self._die(exc)
            return
        except Exception as exc:
            self._settle(part, batch, False)
            log.error(
                "partition %s: batch at offset %d failed (%s: %s); it will be re-read",
                part.tp,
                records[0].offset,
                type(exc).__name__,
                exc,
            )
            rewind_to = self._discard_from(part, batch)
            for attempt in range(5 if batch.in_txn else 0):  # the broker may be restarting: give it a moment
                try:
                    await part.transactions.abort()
                    metrics.TRANSACTIONS.labels("abort").inc()
                    break
                except FENCED as fenced:
                    self.partitions.fenced(part, fenced, "while aborting")
                    return
                except Exception as abort_exc:
                    if (
                        "Not in the middle" in str(abort_exc)
                        or "not in transaction" in str(abort_exc).lower()
                    ):
                        break
                    if attempt == 4:
                        await self._die(
                            FatalProcessorError(
                                f"abort after a failed commit failed on {part.tp}: {type(abort_exc).__name__}: {abort_exc}"
                            )
                        )
                        return
                    await asyncio.sleep(2.0 * (attempt + 1))
            consumer = self.partitions.consumer
            if consumer is not None and part.tp in self.partitions.parts:
                consumer.seek(part.tp, rewind_to)
            part.held_until = time.monotonic() + 1.0
            part.rewinding = False
            await asyncio.sleep(1.0)
        finally:
            self._maybe_resume(part)

    def _settle(self, part: Partition, batch: FetchBatch, committed: bool) -> None:
        """Record the batch's fate (the next batch waits on it) and drop it from the partition."""
        if not batch.done.done():
            batch.done.set_result(committed)
        if batch in part.inflight:
            part.inflight.remove(batch)
        for token, task in batch.tails:
            if part.tails.get(token) is task:
                del part.tails[token]
        if committed:  # its writes are in the store now: later views stop going through it
            batch.view.committed(part.store)

    def _discard_from(self, part: Partition, failed: FetchBatch) -> int:
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
        consumer = self.partitions.consumer
        if consumer is not None and part.tp in consumer.assignment():
            consumer.pause(part.tp)
        first = failed.records[0].offset
        committing = [b for b in part.inflight if b.in_txn and b.records[0].offset < first]
        rewind_to: int = first  # (records are aiokafka's ConsumerRecord: untyped)
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

    def _maybe_resume(self, part: Partition) -> None:
        """Fetch ``part`` again once it is ours, open, not rewinding or held back after a failed
        commit, and has room for another batch in flight."""
        lifecycle, consumer = self.partitions, self.partitions.consumer
        if (
            lifecycle.stopping
            or part.lost
            or part.rewinding
            or consumer is None
            or part.tp not in lifecycle.parts
            or part.tp not in consumer.assignment()
            or part.tp in lifecycle.opening
        ):
            return
        if time.monotonic() < part.held_until or len(part.inflight) >= self.config.worker.batches_in_flight:
            return
        consumer.resume(part.tp)

    # ------------------------------------------------------------------ the loop: commit
    async def _commit(self, part: Partition, batch: FetchBatch, outcomes: list[Outcome]) -> None:
        """The batch's outputs, changelog writes and consumed offset in one transaction."""
        records = batch.records
        payloads = serialize_outputs(self.topics, self.handler, records, outcomes)
        batch.in_txn = True
        await part.transactions.commit_batch(records, payloads, batch.view.pending)
        part.next_offset = records[-1].offset + 1
        self.records_done += len(records)
        if self.first_answer_at is None:
            self.first_answer_at = time.time()
