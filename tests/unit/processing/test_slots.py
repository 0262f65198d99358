"""OrderedSlots: a semaphore that serves the oldest batch first."""

from __future__ import annotations

import asyncio

import pytest

from router_stream.processing.slots import OrderedSlots


async def test_bounds_concurrency_and_serves_lowest_priority_first():
    slots, inside, peak, order = OrderedSlots(2), 0, 0, []

    async def work(priority: int, tag: str) -> None:
        nonlocal inside, peak
        async with slots.slot(priority):
            inside += 1
            peak = max(peak, inside)
            order.append(tag)
            await asyncio.sleep(0.01)
            inside -= 1

    tasks = [
        asyncio.create_task(work(p, t))
        for p, t in [(5, "a"), (5, "b"), (9, "late-1"), (9, "late-2"), (1, "old-1"), (1, "old-2"), (5, "c")]
    ]
    await asyncio.gather(*tasks)
    assert peak == 2 and slots.free == 2
    assert order[:2] == ["a", "b"]  # free slots are taken at once
    assert order[2:] == ["old-1", "old-2", "c", "late-1", "late-2"]  # then by priority, FIFO within one


async def test_cancelled_waiter_does_not_leak_a_slot():
    slots = OrderedSlots(1)
    await slots.acquire(0)
    waiter = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.free == 1 and slots.waiting == 0
    # granted and cancelled in the same step: the slot goes back
    await slots.acquire(0)
    granted = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `granted`
    granted.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert slots.free == 1


def test_rejects_zero_slots():
    with pytest.raises(ValueError):
        OrderedSlots(0)
