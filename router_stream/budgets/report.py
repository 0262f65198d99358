"""A scope's committed spend per budget, as ``router-stream state get`` shows it."""

from __future__ import annotations

from typing import Any

from .entry import MICRO, Entry
from .limits import BudgetConfig


def spend_report(
    budgets: list[BudgetConfig], values: dict[str, dict[int, bytes | None]], now_ms: int
) -> list[dict[str, Any]]:
    """One entry per budget with spend for the scope: the current window's spend summed over the
    partitions read (``values``: budget name -> partition -> the last committed ``s:`` value).
    A budget whose scope has no entry, or only entries of past windows, shows zero spend only
    when some partition holds an entry at all."""
    out = []
    for b in budgets:
        raw = {p: v for p, v in values.get(b.name, {}).items() if v is not None}
        if not raw:
            continue
        start = b.period.start(now_ms)
        entries = [Entry.load(v) for v in raw.values()]
        spent = [e.spent(b.period, start) for e in entries]
        out.append(
            {
                "budget": b.name,
                "mode": "co-partitioned" if b.co_partitioned else "spread",
                "window": b.period.label(start),
                "window_start": start,
                "spent_usd": sum(u for u, _ in spent) / MICRO,
                "spent_tokens": sum(t for _, t in spent),
                "reserved_usd": sum(e.reserved_usd for e in entries) / MICRO,
                "limit_usd": b.limit.usd,
                "limit_tokens": b.limit.tokens,
                "partitions": len(raw),
            }
        )
    return out
