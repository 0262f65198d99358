"""A partition's gate: request batches share it, state maintenance takes it alone.

Several batches of one partition are in flight at once (``worker.batches_in_flight``); they
order themselves (per-key chains, commits in offset order) and read each other's uncommitted
state through chained views. The janitor's TTL purge and Batch API job completions instead
read the committed store and write it in their own transaction, so they must run when no batch
is in flight: they enter :meth:`Gate.exclusive`, which waits for the batches inside to finish
and holds back new ones meanwhile (a waiting exclusive user goes first, so a busy partition
cannot starve it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Gate:
    """Shared entry for batches, exclusive entry for state maintenance (writer preference)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive_waiting = 0
        self._exclusive_held = False

    @property
    def shared_count(self) -> int:
        return self._shared

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive_waiting and not self._exclusive_held)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._exclusive_waiting += 1
            try:
                await self._cond.wait_for(lambda: self._shared == 0 and not self._exclusive_held)
            except BaseException:  # cancelled while waiting: let the batches it held back in
                self._exclusive_waiting -= 1
                self._cond.notify_all()
                raise
            self._exclusive_waiting -= 1
            self._exclusive_held = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive_held = False
                self._cond.notify_all()
