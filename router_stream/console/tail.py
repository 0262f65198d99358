"""``router-stream tail``: follow the responses, audit or dead-letter topic (or the requests).

Reads every partition without a consumer group (nothing is committed, no worker's group is
touched), in ``read_committed`` like any client of the router should: an answer from an aborted
transaction was produced again by the retry and must not be seen twice. Starts at the end of each
partition (new records only) or, with ``from_beginning``, at its start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .target import Target

Emit = Callable[[bytes | None, bytes | None, "dict[str, Any] | None"], None]


async def tail(
    target: Target,
    topic: str,
    partitions: int,
    emit: Emit,
    *,
    from_beginning: bool = False,
    request_id: str | None = None,
    max_records: int | None = None,
    timeout: float | None = None,
) -> int:
    """Call ``emit(key, value, parsed)`` for each record of the ``partitions`` partitions of ``topic`` (those of ``request_id`` only, if given).

    Stops after ``max_records`` records, or when ``timeout`` seconds pass without one; otherwise
    follows the topic until cancelled. Returns the number of records emitted.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ..kafka_settings import client_settings
    from .render import parse

    consumer = AIOKafkaConsumer(
        **client_settings(target.kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    count = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        last = time.monotonic()
        while max_records is None or count < max_records:
            if timeout is not None and time.monotonic() - last >= timeout:
                break
            wait_s = 1.0 if timeout is None else max(0.05, min(1.0, timeout - (time.monotonic() - last)))
            batches = await consumer.getmany(timeout_ms=int(wait_s * 1000))
            for tp in sorted(batches):
                for msg in batches[tp]:
                    obj = parse(msg.value)
                    if request_id is not None and (obj is None or obj.get("request_id") != request_id):
                        continue
                    emit(msg.key, msg.value, obj)
                    count += 1
                    last = time.monotonic()
                    if max_records is not None and count >= max_records:
                        return count
    finally:
        await consumer.stop()
    return count


def run(target: Target, topic: str, partitions: int, emit: Emit, **kw: Any) -> int:
    """:func:`tail` from synchronous code; Kafka errors become the CLI's one-line errors."""
    from ..kafka_check import translate

    try:
        return asyncio.run(tail(target, topic, partitions, emit, **kw))
    except BrokenPipeError:  # our reader went away (| head), not Kafka
        raise
    except Exception as exc:
        raise translate(exc, target.kafka.bootstrap_servers, "tail") from None
