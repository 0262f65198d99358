"""The chaos run's budget checks catch a lost charge, a left reservation and an overshoot."""

from __future__ import annotations

import json
from types import SimpleNamespace

from router_stream.budgets import spend_key
from router_stream_dev.chaos_budgets import verify_budgets


def rec(value: dict | None, key: bytes = b"", partition: int = 0):
    return SimpleNamespace(
        key=key, partition=partition, value=None if value is None else json.dumps(value).encode()
    )


def audit(rid: str, scope: str, charged: float, estimate: float = 0.01, duplicate: bool = False):
    return rec(
        {
            "request_id": rid,
            "duplicate": duplicate,
            "budgets": [{"scope": scope, "charged_usd": charged, "estimate_usd": estimate}],
        }
    )


def test_consistent_run_passes_and_each_fault_is_caught():
    key = spend_key("chaos", "cust-1")
    changelog = [rec({"u": 10_000, "ru": 0}, key), rec({"u": 30_000, "ru": 0}, key)]  # the last value counts
    audits = [
        audit("r1", "cust-1", 0.01),
        audit("r2", "cust-1", 0.02),
        audit("r2", "cust-1", 0.02, duplicate=True),
    ]
    responses = [rec({"error_kind": "budget_exceeded"})]
    ok = verify_budgets(changelog, responses, audits, limit_usd=0.025)
    assert ok.ok and ok.scopes == 1 and ok.rejected == 1 and abs(ok.max_over_usd - 0.005) < 1e-9

    lost = verify_budgets(changelog, responses, audits[:1], limit_usd=0.025)  # a charge without its audit
    assert lost.mismatch == 1 and not lost.ok
    left = verify_budgets([rec({"u": 30_000, "ru": 5}, key)], responses, audits, limit_usd=0.025)
    assert left.reserved_left == 1 and not left.ok
    over = verify_budgets(changelog, responses, audits, limit_usd=0.015)  # 0.03 spent, 0.015 + 0.01 allowed
    assert over.over_limit == 1 and not over.ok
    none_rejected = verify_budgets(changelog, [], audits, limit_usd=0.025)
    assert not none_rejected.ok  # a run that never reached the limit proves nothing
