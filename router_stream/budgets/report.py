"""A scope's committed spend per budget, as ``router-stream state get`` shows it."""

from __future__ import annotations

from typing import Any

from .config import BudgetConfig
from .ledger import MICRO, Entry
from .windows import window_label, window_start_ms


def spend_report(budgets: list[BudgetConfig], values: dict[str, dict[int, bytes | None]],
                 now_ms: int) -> list[dict[str, Any]]:
    """One entry per budget with spend for the scope: the current window's spend summed over the
    partitions read (``values``: budget name -> partition -> the last committed ``s:`` value).
    A budget whose scope has no entry, or only entries of past windows, shows zero spend only
    when some partition holds an entry at all."""
    out = []
    for b in budgets:
        raw = {p: v for p, v in values.get(b.name, {}).items() if v is not None}
        if not raw:
            continue
        start = window_start_ms(b.window, b.time_zone, now_ms)
        current = [e for e in (Entry.load(v) for v in raw.values()) if e.window == start]
        out.append({"budget": b.name, "mode": "co-partitioned" if b.co_partitioned else "spread",
                    "window": window_label(b.window, b.time_zone, start), "window_start": start,
                    "spent_usd": sum(e.usd for e in current) / MICRO, "spent_tokens": sum(e.tokens for e in current),
                    "reserved_usd": sum(e.reserved_usd for e in current) / MICRO,
                    "limit_usd": b.limit.usd, "limit_tokens": b.limit.tokens, "partitions": len(raw)})
    return out
