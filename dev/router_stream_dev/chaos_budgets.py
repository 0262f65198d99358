"""The budget checks of a chaos run (:mod:`.chaos` with ``budget_usd``).

Each Kafka key is a tenant with a per-key budget (co-partitioned: exact enforcement). After the
run, from the read_committed topics:

* ``mismatch``: scopes whose committed spend (the last changelog value of their ``s:`` key) is not
  the sum of the costs charged by their committed audit records, to the micro-dollar — a crash
  that lost or repeated a charge without its answer would show here;
* ``reserved_left``: scopes whose committed entry still holds a reservation (none may: an online
  request reserves and settles in one transaction);
* ``over_limit``: scopes whose spend passed the hard limit by more than one request's estimate;
* ``rejected``: budget_exceeded responses (the run must reach the limit for the check to mean
  anything).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from router_stream.budgets.entry import MICRO, split_spend_key


def budget_config(limit_usd: float) -> list[dict[str, Any]]:
    """The chaos run's budget: per Kafka key, this month, ``limit_usd``, reject at the limit."""
    return [{"name": "chaos", "scope": "key", "window": "month", "limit": {"usd": limit_usd}}]


@dataclass
class BudgetReport:
    scopes: int = 0
    rejected: int = 0
    mismatch: int = 0
    reserved_left: int = 0
    over_limit: int = 0
    spent_usd: float = 0.0
    max_over_usd: float = 0.0  # the largest spend above the limit (allowed: one estimate)
    examples: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.mismatch or self.reserved_left or self.over_limit) and self.rejected > 0

    def summary(self) -> str:
        return (
            f"  budgets: {self.scopes} scopes, ${self.spent_usd:.6f} committed, {self.rejected} budget_exceeded; "
            f"mismatch {self.mismatch}  reservations left {self.reserved_left}  over limit {self.over_limit} "
            f"(largest excess ${self.max_over_usd:.6f}, allowed: one request's estimate)"
        )


def verify_budgets(
    changelog: list[Any], responses: list[Any], audits: list[Any], limit_usd: float
) -> BudgetReport:
    """Fill a :class:`BudgetReport` from the read_committed records (see the module docstring)."""
    report = BudgetReport()
    last: dict[tuple[bytes, int], bytes | None] = {}
    for r in changelog:
        if split_spend_key(r.key) is not None:
            last[(r.key, r.partition)] = r.value
    committed: Counter[str] = Counter()
    for (key, _partition), value in last.items():
        if value is None:
            continue
        entry = json.loads(value)
        scope = split_spend_key(key)[1]  # type: ignore[index]
        committed[scope] += int(entry["u"])
        if entry.get("ru") or entry.get("rt"):
            report.reserved_left += 1
    charged: Counter[str] = Counter()
    estimates: dict[str, int] = {}
    seen: set[str] = set()
    for r in audits:
        body = json.loads(r.value)
        if body.get("duplicate") or body["request_id"] in seen:
            continue
        seen.add(body["request_id"])
        for note in body.get("budgets") or []:
            if "charged_usd" in note:
                charged[note["scope"]] += round(note["charged_usd"] * MICRO)
            if "estimate_usd" in note:
                estimates[note["scope"]] = max(
                    estimates.get(note["scope"], 0), round(note["estimate_usd"] * MICRO)
                )
    report.rejected = sum(1 for r in responses if json.loads(r.value).get("error_kind") == "budget_exceeded")
    scopes = set(committed) | set(charged)
    report.scopes = len(scopes)
    report.spent_usd = sum(committed.values()) / MICRO
    bad = [(s, committed[s], charged[s]) for s in sorted(scopes) if committed[s] != charged[s]]
    report.mismatch = len(bad)
    if bad:
        report.examples["mismatch (scope, committed µUSD, charged µUSD)"] = bad[:5]
    limit = round(limit_usd * MICRO)
    for s in scopes:
        over = committed[s] - limit
        report.max_over_usd = max(report.max_over_usd, over / MICRO)
        if over > estimates.get(s, 0):
            report.over_limit += 1
    return report
