"""The consumer group's committed offset of one partition, read so that a broker in motion
cannot pass for "never committed".

Apart from the partition lifecycle (``lifecycle.py``), which asks it once per partition it
opens: it is the one place that talks to the group coordinator directly, with its own retry
loop. Not ``AIOKafkaConsumer.committed()``: aiokafka 0.14 sends OffsetFetch v3 and ignores the
response's top-level ``error_code``. While a broker shuts down, restarts or hands the group
coordinator to another broker, it answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS there
with no partitions, and ``committed()`` returns None: the worker would take that for "never
committed" and re-read the whole partition from offset 0 (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from aiokafka.protocol.commit import OffsetFetchRequest

log = logging.getLogger(__name__)

__all__ = ["committed_offset"]


async def committed_offset(
    consumer: AIOKafkaConsumer,
    group_id: str,
    tp: TopicPartition,
    stopping: Callable[[], bool],
    timeout: float = 120,
) -> int | None:
    """The group's committed offset of ``tp``; None only when the broker says there is none.

    Retriable errors (and timeouts) are asked again every 0.2 s until ``timeout``; a worker that
    is ``stopping()`` gives up with ``CancelledError``."""
    coordinator = consumer._coordinator
    deadline = time.monotonic() + timeout
    logged = False
    while True:
        try:
            await asyncio.wait_for(coordinator.ensure_coordinator_known(), 5)
            response = await coordinator._send_req(OffsetFetchRequest(group_id, [(tp.topic, [tp.partition])]))
            codes = [getattr(response, "error_code", 0)]
            found, offset = False, -1
            for topic, parts in response.topics:
                for partition, off, _metadata, code in parts:
                    if topic == tp.topic and partition == tp.partition:
                        found, offset = True, off
                        codes.append(code)
            error = next((kafka_errors.for_code(c) for c in codes if c), None)
            if error is not None:
                if error in (
                    kafka_errors.NotCoordinatorForGroupError,
                    kafka_errors.GroupCoordinatorNotAvailableError,
                ):
                    coordinator.coordinator_dead()
                raise error()
            if found:
                return None if offset < 0 else offset
        except (TimeoutError, KafkaError) as exc:
            if isinstance(exc, KafkaError) and not exc.retriable:
                raise
            if not logged:
                log.info(
                    "committed offset of %s not available yet (%s); asking again", tp, type(exc).__name__
                )
                logged = True
        if stopping():
            raise asyncio.CancelledError()
        if time.monotonic() > deadline:
            raise kafka_errors.KafkaTimeoutError(f"no committed offset for {tp} within {timeout:.0f}s")
        await asyncio.sleep(0.2)
