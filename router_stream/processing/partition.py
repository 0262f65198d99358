"""The records the exactly-once path passes around: an owned input partition and its batches in flight.

Plain data apart from behaviour (as aiokafka keeps ``TopicPartition`` and friends in
``structs.py``): the lifecycle (``lifecycle.py``) creates and closes a :class:`Partition`, the
ordering (``ordering.py``) chains records through its ``tails``, the loop (``processor.py``)
dispatches and settles its :class:`FetchBatch` es, and the janitor and Batch API jobs write through
its :attr:`Partition.transactions`. Each of them reads the same fields, so they live here, in a
module that imports none of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from ..errors import RouterStreamError
from ..state.store import PartitionStore
from .gate import Gate
from .handler import StateView
from .transactions import PartitionTransactions


class FatalProcessorError(RouterStreamError, RuntimeError):
    """The processor cannot continue safely; the worker must stop (and be restarted)."""


@dataclass(slots=True)
class FetchBatch:
    """One fetched run of a partition's records, from handling to its commit (a "fetch batch",
    docs/glossary.md: not a prompt micro-batch nor a Batch API job)."""

    records: list[Any]
    view: StateView
    gen: int
    done: asyncio.Future[bool]  # True once committed; False if failed or discarded
    seq: int = 0  # dispatch number: the oldest batch gets in-flight slots first
    task: asyncio.Task[None] | None = None
    tails: list[tuple[str, asyncio.Task[None]]] = field(default_factory=list)
    in_txn: bool = False  # its transaction has begun (a cancel must abort it)


@dataclass(slots=True)
class Partition:
    """An input partition this worker owns and has opened: its producer (through
    ``transactions``), its committed store and what is in flight on it."""

    tp: TopicPartition
    store: PartitionStore
    transactions: PartitionTransactions
    next_offset: int = 0  # committed
    dispatched: int = 0  # next offset to hand to a batch
    inflight: list[FetchBatch] = field(default_factory=list)  # in offset order
    tails: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # order token -> last chain
    gen: int = 0  # bumped when a failure discards the batches in flight
    held_until: float = 0.0  # stay paused until then (after a failed commit)
    rewinding: bool = False  # a failed batch is aborting; nothing is dispatched until it has sought back
    lost: bool = False
    gate: Gate = field(default_factory=Gate)
    jobs_task: asyncio.Task[None] | None = None
    janitor_task: asyncio.Task[None] | None = None
