"""Other partitions' committed spend, for budgets whose scope spreads over partitions.

A budget scoped by a request field (a tenant) while records are keyed by something finer (a
conversation) sees one tenant's requests on many partitions. Each partition keeps its own exact
spend for the tenant in its state (``s:`` keys, :mod:`.ledger`), and every write of it reaches the
changelog topic in the transaction that answers the request. So the tenant's exact total at any
moment is the sum over partitions of the last committed ``s:`` value of each: a grow-only
counter per partition, summed — no repartition topic and no aggregator, nothing counted twice.

:class:`ChangelogTotals` is that sum as every worker sees it: one consumer with no group reads
the whole changelog topic (read_committed, from the beginning, then following), keeps the last
``s:`` value per (key, partition), and answers :meth:`total` for admission. Enforcement lags by the
time a committed write takes to reach this consumer (measured in tests/integration and stated in
docs/budgets.md); accounting does not lag, since the per-partition values are exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import metrics
from .entry import SPEND_PREFIX, Entry
from .limits import BudgetConfig

log = logging.getLogger(__name__)


class ChangelogTotals:
    """Follows the changelog's ``s:`` keys of every partition (see the module docstring)."""

    def __init__(self, consumer_settings: dict[str, Any], topic: str) -> None:
        self._settings = consumer_settings
        self._topic = topic
        self._values: dict[bytes, dict[int, Entry]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        #: seconds between a changelog record's timestamp and the moment it was applied here (last)
        self.last_delay_s: float = 0.0

    def total(
        self, key: bytes, budget: BudgetConfig, now_start: int, exclude_partition: int
    ) -> tuple[int, int]:
        """(micro-USD, tokens) settled in ``budget``'s current window (starting at ``now_start``)
        plus reserved, on every partition but ``exclude_partition`` (whose value the caller
        reads from its own state, exactly)."""
        usd = tokens = 0
        for partition, entry in self._values.get(key, {}).items():
            if partition != exclude_partition:
                spent_usd, spent_tokens = entry.spent(budget.period, now_start)
                usd += spent_usd + entry.reserved_usd
                tokens += spent_tokens + entry.reserved_tokens
        return usd, tokens

    def apply(self, key: bytes, partition: int, value: bytes | None) -> None:
        """One changelog record (pure; the consumer loop calls it)."""
        if not key.startswith(SPEND_PREFIX):
            return
        if value is None:
            self._values.get(key, {}).pop(partition, None)
        else:
            self._values.setdefault(key, {})[partition] = Entry.load(value)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._settings,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await self._consumer.start()
        # no group: aiokafka assigns every partition of a subscribed topic, starting at the earliest
        self._consumer.subscribe(topics=[self._topic])
        tps: list[TopicPartition] = []
        for _ in range(100):
            tps = sorted(self._consumer.assignment())
            if tps:
                break
            await asyncio.sleep(0.1)
        if not tps:
            raise RuntimeError(
                f"budget totals: the changelog topic {self._topic!r} has no partitions; "
                "run `router-stream topics apply --config <file>` first"
            )
        ends = await self._consumer.end_offsets(tps) if tps else {}
        self._task = asyncio.create_task(self._run(ends), name="router-stream-budget-totals")

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        pending = {tp: end for tp, end in ends.items() if end > 0}
        if not pending:
            self.caught_up.set()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker going away: keep the last totals and retry
                log.warning("budget totals: %s; retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            now = time.time()
            for tp, records in batches.items():
                for r in records:
                    if r.key is not None:
                        self.apply(r.key, tp.partition, r.value)
                spends = [r for r in records if r.key is not None and r.key.startswith(SPEND_PREFIX)]
                if spends and self.caught_up.is_set():  # catching up on history is not lag
                    self.last_delay_s = max(0.0, now - spends[-1].timestamp / 1000)
                    metrics.BUDGET_TOTALS_DELAY.set(self.last_delay_s)
            if not self.caught_up.is_set():
                for tp in list(pending):
                    if await self._consumer.position(tp) >= pending[tp]:
                        del pending[tp]
                if not pending:
                    self.caught_up.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
