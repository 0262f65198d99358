"""The records the exactly-once path passes around: an owned input partition and its batches in
flight, and one record's way through the handler (its :class:`Source`, the :class:`StateView` it
reads and writes, the :class:`Outcome` it ends as).

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
from typing import Any, Protocol

from aiokafka import TopicPartition

from ..errors import RouterStreamError
from ..schemas import Audit, DeadLetter, Response
from ..state import keystate
from ..state.store import PartitionStore
from .gate import Gate
from .transactions import PartitionTransactions


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


@dataclass(slots=True)
class StateView:
    """The committed store overlaid with this batch's pending writes (read your own writes).

    Key states (``k:`` values, :mod:`~router_stream.state.keystate`) written through
    :meth:`put_state` are also kept decoded, so the next record of the key in this batch (or a
    later batch reading through this view) skips parsing them again: the decoded copy is used only
    while the value read is the very bytes object it was made from.
    """

    store: StateReader
    pending: dict[bytes, bytes | None] = field(default_factory=dict)
    decoded: dict[bytes, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.store.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value

    def get_state(self, key: bytes) -> dict[str, Any]:
        """:func:`keystate.load` of ``get(key)``, from the decoded copy when it is that value."""
        raw = self.get(key)
        view: StateReader = self
        while isinstance(view, StateView):
            hit = view.decoded.get(key)
            if hit is not None and hit[0] is raw:
                return keystate.copy(hit[1])
            view = view.store
        return keystate.load(raw)

    def put_state(self, key: bytes, state: dict[str, Any]) -> None:
        """``put(key, keystate.dump(state))``, keeping a decoded copy for :meth:`get_state`."""
        raw = keystate.dump(state)
        self.pending[key] = raw
        self.decoded[key] = (raw, keystate.copy(state))

    def committed(self, store: StateReader) -> None:
        """Its writes are in ``store`` now: reads go straight there."""
        self.store, self.pending, self.decoded = store, {}, {}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


@dataclass(slots=True)
class Outcome:
    """The records one input record produces (the processor adds them to the transaction)."""

    response: Response | None = None
    #: the response's JSON (``exclude_none``) when the handler already made it (for its dedup entry)
    response_bytes: bytes | None = None
    audit: Audit | None = None
    dead_letter: DeadLetter | None = None
    model_called: bool = False
    parked: bool = False  # waiting for a Batch API job; answered later by processing/batch_jobs.py

    def response_json(self) -> bytes:
        """The response as produced: JSON without nulls (made once, shared with the dedup entry)."""
        if self.response_bytes is None:
            assert self.response is not None
            self.response_bytes = self.response.model_dump_json(exclude_none=True).encode()
        return self.response_bytes


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
