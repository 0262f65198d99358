"""The janitor's state expiry: old decisions and dedup entries go, fresh ones stay."""

from __future__ import annotations

import json


def test_expired_keys_picks_old_decisions_and_dedup_entries_only():
    from router_stream.processing.janitor import expired_keys

    now = 1_000_000
    k = [
        (b"k:fresh", json.dumps({"decision": {"decided_at": now - 10}, "count": 3}).encode()),
        (b"k:old", json.dumps({"decision": {"decided_at": now - 5000}, "count": 1}).encode()),
        (b"k:none", json.dumps({"decision": None, "count": 9}).encode()),
    ]
    r = [
        (b"r:new", json.dumps({"produced_at": now - 1}).encode()),
        (b"r:stale", json.dumps({"produced_at": now - 99_999}).encode()),
    ]
    assert sorted(expired_keys(k, r, now, ttl_ms=1000, dedup_ms=50_000)) == [b"k:none", b"k:old", b"r:stale"]
