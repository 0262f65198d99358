"""The worker's ``GET /state`` view: one key's committed state from the partitions it owns.

For dashboards that already poll the worker's HTTP port. It reads the local RocksDB store of an
owned partition, which holds only committed writes (the processor applies a batch's writes after
its transaction commits), so it agrees with ``router-stream state get``. A worker answers only
for partitions it owns: for another partition it says which one and answers 404; the CLI reads
the changelog and works for every partition.

Query: ``key=K`` (a Kafka key: its partition and, with ``cache.scope: key``, the scope key) or
``scope_value=V`` (field/expression scopes; every owned partition unless ``kafka_key=`` or
``partition=`` names one). The body has the shape of ``router-stream state get --json``, with
each budget's spend for the key on the owned partitions (``budgets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .budgets import spend_key
from .budgets.report import spend_report
from .processing.processor import Processor
from .schemas import now_ms
from .state import keystate
from .state.changelog import partition_for_key
from .state.store import key_state_key


def state_view(
    processor: Processor, default_ttl_s: float, cache_scope: str, query: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a ``/state`` query."""
    key, value, kafka_key = query.get("key"), query.get("scope_value"), query.get("kafka_key")
    if (key is None) == (value is None) or not (key or value):
        return 400, {
            "error": "give exactly one of key=<Kafka key> or scope_value=<cache.scope field/expression "
            "value> (optionally with kafka_key= or partition=)"
        }
    n = processor.partition_count()
    if n is None:
        return 503, {"error": "this worker has no metadata for the requests topic yet; try again shortly"}
    partition: int | None = None
    if query.get("partition") is not None:
        try:
            partition = int(query["partition"])
        except ValueError:
            return 400, {"error": "partition must be an integer"}
        if not 0 <= partition < n:
            return 400, {"error": f"partition {partition} does not exist (0..{n - 1})"}
    placed_by = key if key is not None else kafka_key
    if partition is None and placed_by is not None:
        partition = partition_for_key(placed_by.encode("utf-8"), n)
    scope_key = key if key is not None else value
    assert scope_key is not None
    wanted = [partition] if partition is not None else list(range(n))
    owned = {p: store for p in wanted if (store := processor.owned_store(p)) is not None}
    body: dict[str, Any] = {
        "scope_key": scope_key,
        "cache_scope": cache_scope,
        "worker_id": processor.worker_id,
        "partitions_owned_here": sorted(owned),
        "partitions_not_owned_here": [p for p in wanted if p not in owned],
    }
    if not owned:
        body["error"] = (
            f"partition {wanted[0]} is not owned by this worker; ask the worker that owns it, or read "
            "the changelog: router-stream state get"
            if len(wanted) == 1
            else "this worker owns none of the partitions; use router-stream state get"
        )
        return 404, body
    now = now_ms()
    entries = []
    budgets = processor.config.budgets
    spend: dict[str, dict[int, bytes | None]] = {b.name: {} for b in budgets}
    for p, store in sorted(owned.items()):
        try:
            raw = store.get(key_state_key(scope_key))
            for b in budgets:
                spend[b.name][p] = store.get(spend_key(b.name, scope_key))
        except Exception as exc:  # closed by a rebalance between the lookup and the read
            return 503, {
                **body,
                "error": f"partition {p} is being reassigned ({type(exc).__name__}); try again",
            }
        entries.append({"partition": p, **keystate.describe(raw, now, default_ttl_s)})
    found = [e for e in entries if e["found"]]
    spent = spend_report(budgets, spend, now)
    body.update(found=bool(found or spent), entries=found, budgets=spent)
    if not found and not spent:
        body["error"] = "no state for this key on the partitions this worker owns"
        return 404, body
    return 200, body
