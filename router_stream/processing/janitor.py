"""Expire old state: dedup entries past ``cache.dedup_window_s``, sticky decisions past ``cache.ttl_s``.

Without this, the partition stores and the compacted changelog would keep one entry per request
id and per key forever. Every ``cache.purge_interval_s`` the janitor scans its partition's store
and writes tombstones for what expired — through the changelog, in a transaction on the
partition's producer, under the partition's state lock — so local state and Kafka stay equal.
A key's request counter goes with its expired decision; a decision whose strategy set its own
``cache.ttl_s`` expires after that one. Only ``k:`` and ``r:`` entries are ever purged: parked
Batch API requests (``j:``/``b:``/``p:``) and controller state (``c:``, e.g. the learned router's
recalibrated threshold) are not touched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from ..schemas import now_ms

if TYPE_CHECKING:
    from ..config import CacheConfig
    from .partition import Partition

log = logging.getLogger(__name__)


def expired_keys(
    entries_k: list[tuple[bytes, bytes]],
    entries_r: list[tuple[bytes, bytes]],
    now: int,
    ttl_ms: float,
    dedup_ms: float,
) -> list[bytes]:
    """Store keys whose entries have expired (pure; unit-tested)."""
    out = []
    for key, raw in entries_k:
        state = json.loads(raw)
        decision = state.get("decision")
        # a decision carries its strategy's own ttl_s (strategy ``cache.ttl_s``) when it has one
        own_ttl = decision.get("ttl_s") if decision is not None else None
        if decision is None or now - decision.get("decided_at", 0) > (own_ttl * 1000 if own_ttl else ttl_ms):
            out.append(key)
    for key, raw in entries_r:
        if now - json.loads(raw).get("produced_at", 0) > dedup_ms:
            out.append(key)
    return out


async def run_janitor(part: Partition, cache: CacheConfig) -> None:
    """Expire ``part``'s old state every ``cache.purge_interval_s`` until cancelled (partition close)."""
    while True:
        await asyncio.sleep(cache.purge_interval_s)
        try:
            async with part.gate.exclusive():
                k = await asyncio.to_thread(part.store.scan, b"k:")
                r = await asyncio.to_thread(part.store.scan, b"r:")
                doomed = expired_keys(k, r, now_ms(), cache.ttl_s * 1000, cache.dedup_window_s * 1000)
                for start in range(0, len(doomed), 5000):
                    await part.transactions.transact([], dict.fromkeys(doomed[start : start + 5000]))
            if doomed:
                log.info("partition %s: expired %d state entries", part.tp, len(doomed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "state expiry on %s failed (%s: %s); will try again", part.tp, type(exc).__name__, exc
            )
