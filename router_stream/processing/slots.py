"""The worker's in-flight budget, handed out oldest batch first.

``worker.max_in_flight`` bounds the records being handled at once across all partitions. An
``asyncio.Semaphore`` serves waiters first come, first served, and that is the wrong order
here: a same-key chain re-queues after each of its records, behind every record fetched since,
so under a backlog the oldest batches finished last and the first commit came only when nearly
the whole backlog was done. :class:`OrderedSlots` serves the waiter with the lowest priority
value first; the processor passes the batch's dispatch number, so the oldest batch's records go
first, batches complete (and commit) in order, and the committed offset moves steadily.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class OrderedSlots:
    """A counting semaphore whose waiters are served lowest ``priority`` first (FIFO within one)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # a slot was handed over as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        """Hand the slot straight to the best live waiter, else return it to the pool."""
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
