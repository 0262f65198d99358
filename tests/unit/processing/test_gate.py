"""The partition gate: batches share it, state maintenance takes it alone."""

from __future__ import annotations

import asyncio

from router_stream.processing.gate import Gate


async def test_shared_users_overlap():
    gate, inside, peak = Gate(), 0, 0

    async def batch() -> None:
        nonlocal inside, peak
        async with gate.shared():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(batch() for _ in range(5)))
    assert peak == 5 and gate.shared_count == 0


async def test_exclusive_waits_for_batches_and_holds_new_ones_back():
    gate, log = Gate(), []
    release_first = asyncio.Event()

    async def first() -> None:
        async with gate.shared():
            log.append("first in")
            await release_first.wait()
            log.append("first out")

    async def janitor() -> None:
        async with gate.exclusive():
            log.append("janitor")
            await asyncio.sleep(0.01)
            log.append("janitor done")

    async def second() -> None:
        async with gate.shared():
            log.append("second in")

    t1 = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    t2 = asyncio.create_task(janitor())
    await asyncio.sleep(0.01)
    t3 = asyncio.create_task(second())  # arrives while the janitor waits: must wait too
    await asyncio.sleep(0.01)
    assert log == ["first in"]
    release_first.set()
    await asyncio.gather(t1, t2, t3)
    assert log == ["first in", "first out", "janitor", "janitor done", "second in"]


async def test_cancelled_exclusive_waiter_lets_batches_in():
    gate = Gate()
    hold = asyncio.Event()

    async def first() -> None:
        async with gate.shared():
            await hold.wait()

    t1 = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(gate.exclusive().__aenter__())
    await asyncio.sleep(0.01)
    entered = asyncio.Event()

    async def second() -> None:
        async with gate.shared():
            entered.set()

    t2 = asyncio.create_task(second())
    await asyncio.sleep(0.01)
    assert not entered.is_set()
    waiter.cancel()
    await asyncio.wait_for(entered.wait(), 1)
    hold.set()
    await asyncio.gather(t1, t2)
