"""The worker's ``GET /state`` body, from stores of owned partitions (no broker: a stub processor)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from router_stream.budgets import spend_key
from router_stream.budgets.entry import Entry
from router_stream.budgets.windows import window_start_ms
from router_stream.config import parse_config
from router_stream.schemas import now_ms
from router_stream.state.changelog import partition_for_key
from router_stream.state.store import key_state_key
from router_stream.state_http import state_view

CONFIG = parse_config(
    {
        "candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c"}},
        "default": "cheap",
        "budgets": [{"name": "per-key", "window": "month", "limit": {"usd": 1}}],
    },
    environ={},
)


def processor(stores: dict[int, dict[bytes, bytes]]) -> SimpleNamespace:
    return SimpleNamespace(partition_count=lambda: 4, owned_store=stores.get, worker_id="w1", config=CONFIG)


def test_state_shows_the_decision_and_the_budget_spend_of_an_owned_key():
    p = partition_for_key(b"tenant-a", 4)
    start = window_start_ms("month", "UTC", now_ms())
    store = {
        key_state_key("tenant-a"): json.dumps({"decision": None, "count": 3}).encode(),
        spend_key("per-key", "tenant-a"): Entry(start, 120_000, 900).dump(),
    }
    status, body = state_view(processor({p: store}), 3600, "key", {"key": "tenant-a"})
    assert status == 200 and body["entries"][0]["count"] == 3
    [spent] = body["budgets"]
    assert (spent["budget"], spent["spent_usd"], spent["spent_tokens"]) == ("per-key", 0.12, 900)


def test_state_answers_404_for_a_partition_owned_elsewhere():
    status, body = state_view(processor({}), 3600, "key", {"key": "tenant-a"})
    assert status == 404 and "not owned by this worker" in body["error"]
