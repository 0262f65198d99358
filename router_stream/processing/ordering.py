"""Per-key order: records of the same key, request id or budget scope run one after another.

Each record gets *order tokens* — its scope key, its request id (so duplicates of a request meet
in one chain, and the second sees the first's dedup entry) and the budget scopes it spends
(``budgets``) — and records sharing any token form one *chain*, handled in offset order. Chains
run concurrently, bounded by ``worker.max_in_flight`` slots that go to the oldest batch first
(``slots.py``). Several batches of a partition are in flight at once, so a chain first waits for
the last chain of an earlier in-flight batch holding any of its tokens (``Partition.tails``):
per-key order holds across batches, and a slow record holds back its own key only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .. import metrics
from ..config import RouterConfig
from ..schemas import Request
from .control import ControlCommand
from .handler import Handler
from .intake import Poison
from .partition import FetchBatch, Outcome, Partition, Source
from .slots import OrderedSlots

log = logging.getLogger(__name__)


def order_tokens(scope: str, rid: str | None, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Order tokens of a record: its scope key, its request id, and ``extra`` (budget scopes)."""
    return ((f"k\x00{scope}", f"r\x00{rid}") if rid else (f"k\x00{scope}",)) + extra


def order_chains(keys: list[tuple[Any, ...]]) -> list[list[int]]:
    """Indices of records that must run in order: same scope key, request id or budget scope.

    ``keys`` holds each record's :func:`order_tokens` arguments; records sharing a token,
    directly or through others, form one chain (union-find), each chain in offset order."""
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        for token in order_tokens(*key):
            if token in seen:
                parent[find(i)] = find(seen[token])
            else:
                seen[token] = i
    chains: dict[int, list[int]] = {}
    for i in range(len(keys)):
        chains.setdefault(find(i), []).append(i)
    return list(chains.values())


def peek_request_id(value: bytes | None) -> str | None:
    """The request_id of a record without full validation (for ordering duplicates); None if absent."""
    if not value or len(value) > 10_000_000:
        return None
    try:
        data = json.loads(value)
    except Exception:
        return None
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) else None


class KeyOrdering:
    """Handles a batch's records through the handler, in per-key chains (see the module doc)."""

    def __init__(self, config: RouterConfig, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self._slots = OrderedSlots(config.worker.max_in_flight)

    async def handle_batch(self, part: Partition, batch: FetchBatch) -> list[Outcome]:
        """Handle a batch's records: same key (or request id) in order, others concurrently.

        A chain of same-key records first waits for the chain of an earlier in-flight batch
        that holds any of its order tokens, so per-key order also holds across batches.
        """
        records, view = batch.records, batch.view
        sources = [
            Source(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            for r in records
        ]
        keys = []
        # each record is parsed once, here: its request id and (field/expression scopes) its scope
        # key go into the order tokens, and the handler gets both instead of parsing it again
        parsed: list[Request | Poison | ControlCommand | None] = [None] * len(sources)
        scopes: list[str | None] = [None] * len(sources)
        ledger = self.handler.ledger
        for i, s in enumerate(sources):
            try:
                parsed[i] = self.handler.classify(s)
            except Exception:  # never for a record's content; the handler classifies it again and says why
                log.exception("classifying %s[%d]@%d failed", s.topic, s.partition, s.offset)
            record = parsed[i]
            request = record if isinstance(record, (Request, ControlCommand)) else None
            try:
                scope = self.handler.scope_key(s, request)
            except Exception:  # never for a record's content; if it does, order by offset, not crash
                log.exception(
                    "scope key of %s[%d]@%d failed; ordering it by offset", s.topic, s.partition, s.offset
                )
                scope = f"offset:{s.partition}:{s.offset}"
            else:
                if request is not None:
                    scopes[i] = scope  # the handler's key for this very request
            extra = tuple(self.handler.budget_tokens(s, request)) if ledger is not None else ()
            keys.append(
                (
                    scope,
                    request.request_id if isinstance(request, Request) else peek_request_id(s.value),
                    extra,
                )
            )
        outcomes: list[Outcome | None] = [None] * len(records)

        async def chain(indices: list[int], before: list[asyncio.Task[None]]) -> None:
            if before:
                await asyncio.gather(*before, return_exceptions=True)
            slots, seq, handle = self._slots, batch.seq, self.handler.handle
            for i in indices:
                await slots.acquire(seq)  # (not ``async with slots.slot()``: a generator per record)
                metrics.IN_FLIGHT.inc()
                try:
                    outcomes[i] = await handle(sources[i], view, parsed[i], scopes[i])
                finally:
                    metrics.IN_FLIGHT.dec()
                    slots.release()

        tasks = []
        for indices in order_chains(keys):
            tokens = {t for i in indices for t in order_tokens(*keys[i])}
            before = list(
                {
                    id(t): t for tok in tokens if (t := part.tails.get(tok)) is not None and not t.done()
                }.values()
            )
            task = asyncio.create_task(chain(indices, before))
            tasks.append(task)
            if part.gen == batch.gen:
                for tok in tokens:
                    part.tails[tok] = task
                    batch.tails.append((tok, task))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [o for o in outcomes if o is not None]
