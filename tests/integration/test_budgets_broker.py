"""Budgets on a real broker: exact committed spend, enforcement co-partitioned and spread, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from router_stream_dev.harness import produce

from .helpers import make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

PRICES = {"price_input_per_1k": 1.0, "price_output_per_1k": 2.0}  # cents per request, so rounding shows


def _value(rid: str, tenant: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "request_id": rid,
        "prompt": "Say hello to the budget.",
        "params": {"max_tokens": 20},
    }
    if tenant:
        body["fields"] = {"tenant": tenant}
    return json.dumps(body).encode()


SECRET = {"RS_CONTROL_SECRET": "a-test-secret-of-32-characters!!"}


def _config(kafka_bootstrap, model_servers, prefix, tmp_path, budget):
    return make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        candidate_extra={"cheap": PRICES, "strong": PRICES},
        extra={"budgets": [budget], "control": {"secret_env": "RS_CONTROL_SECRET"}},
    )


def _spend(config) -> dict[str, dict[int, dict[str, int]]]:
    """The committed spend per scope and partition: the last changelog value of each s: key."""
    out: dict[str, dict[int, dict[str, int]]] = {}
    for r in read(config, "changelog"):
        if r.key.startswith(b"s:") and r.value is not None:
            scope = r.key.split(b"\x00", 1)[1].decode()
            out.setdefault(scope, {})[r.partition] = json.loads(r.value)
    return out


def _charged(audits: list[dict]) -> dict[str, int]:
    """Micro-USD charged per scope, from the committed audit records."""
    out: dict[str, int] = {}
    for a in audits:
        for note in a.get("budgets") or []:
            if "charged_usd" in note:
                out[note["scope"]] = out.get(note["scope"], 0) + round(note["charged_usd"] * 1_000_000)
    return out


def test_co_partitioned_budget_is_exact_and_survives_a_restart(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    budget = {"name": "per-key", "scope": "key", "window": "month", "limit": {"usd": 0.30}}
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path, budget)
    setup_topics(config, partitions=2)
    topic = config["topics"]["requests"]
    worker = start_worker(tmp_path, config)
    try:
        records = [(b"tenant-a", _value(f"a{i}")) for i in range(20)] + [
            (b"tenant-b", _value(f"b{i}")) for i in range(3)
        ]
        asyncio.run(produce(kafka_bootstrap, topic, records))
        responses = [json.loads(r.value) for r in read(config, "responses", expect=23)]
        audits = [json.loads(r.value) for r in read(config, "audit", expect=23)]
    finally:
        assert worker.terminate() == 0
    a = sorted(
        (r for r in responses if r["request_id"].startswith("a")), key=lambda r: int(r["request_id"][1:])
    )
    answered = [r for r in a if r.get("error") is None]
    rejected = [r for r in a if r.get("error_kind") == "budget_exceeded"]
    assert answered and rejected and len(answered) + len(rejected) == 20
    # in order: every request after the first rejection is rejected too (spend only grows)
    first_reject = next(i for i, r in enumerate(a) if r.get("error_kind"))
    assert all(r.get("error_kind") == "budget_exceeded" for r in a[first_reject:])
    assert re.match(
        r"budget 'per-key' for Kafka key 'tenant-a': month \d{4}-\d{2} \(UTC\): hard limit \$0\.3 reached",
        rejected[0]["error"],
    )
    assert all(r.get("error") is None for r in responses if r["request_id"].startswith("b"))
    spend = _spend(config)
    committed = {scope: sum(v["u"] for v in parts.values()) for scope, parts in spend.items()}
    costs = {
        s: sum(round(x["estimated_cost_usd"] * 1e6) for x in audits if x["key"] == s and not x.get("error"))
        for s in ("tenant-a", "tenant-b")
    }
    assert committed == _charged(audits) == costs  # to the micro-dollar
    assert all(v["ru"] == 0 for parts in spend.values() for v in parts.values())  # no reservation left behind
    estimate = max(n["estimate_usd"] for x in audits for n in x["budgets"] if "estimate_usd" in n)
    assert committed["tenant-a"] <= 300_000 + round(estimate * 1e6)

    worker = start_worker(tmp_path, config, name="w2", env=SECRET)  # the spend comes back from the changelog
    try:
        asyncio.run(produce(kafka_bootstrap, topic, [(b"tenant-a", _value("a-after"))]))
        again = {
            json.loads(r.value)["request_id"]: json.loads(r.value)
            for r in read(config, "responses", expect=24)
        }
        # an operator resets the tenant's budget through Kafka: its next request is served again
        reset = subprocess.run(
            [
                sys.executable,
                "-m",
                "router_stream.cli",
                "state",
                "reset-budget",
                "--config",
                str(tmp_path / "w2.yaml"),
                "--key",
                "tenant-a",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **SECRET},
        )
        assert reset.returncode == 0, reset.stdout + reset.stderr
        asyncio.run(produce(kafka_bootstrap, topic, [(b"tenant-a", _value("a-reset"))]))
        after = {
            json.loads(r.value)["request_id"]: json.loads(r.value)
            for r in read(config, "responses", expect=25)
        }
    finally:
        worker.terminate()
    assert again["a-after"]["error_kind"] == "budget_exceeded"
    assert after["a-reset"].get("error") is None
    # the operator's view: state get reads the same committed spend from the changelog
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "router_stream.cli",
            "state",
            "get",
            "--config",
            str(tmp_path / "w2.yaml"),
            "--key",
            "tenant-a",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)["budgets"]
    assert 0 < round(row["spent_usd"] * 1_000_000) < committed["tenant-a"]  # only a-reset since the reset
    assert row["reserved_usd"] == 0


def test_spread_budget_accounting_is_exact_and_enforcement_lag_is_measured(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    budget = {
        "name": "tenant",
        "scope": "field",
        "scope_field": "tenant",
        "window": "day",
        "limit": {"usd": 0.40},
        "soft": {"usd": 0.2},
    }
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path, budget)
    setup_topics(config, partitions=4)
    topic = config["topics"]["requests"]
    worker = start_worker(tmp_path, config)
    sent = 0
    try:
        # one request at a time, each on a new Kafka key (so on any partition): each admission
        # should see the spend committed on the other partitions before it
        for i in range(30):
            asyncio.run(produce(kafka_bootstrap, topic, [(f"conv-{i}".encode(), _value(f"s{i}", "acme"))]))
            sent += 1
            read(config, "responses", expect=sent, idle=0.2)
            time.sleep(0.3)
        metrics_text = urllib.request.urlopen(
            f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5
        ).read()
    finally:
        worker.terminate()
    responses = {
        json.loads(r.value)["request_id"]: json.loads(r.value) for r in read(config, "responses", expect=30)
    }
    audits = [json.loads(r.value) for r in read(config, "audit", expect=30)]
    answered = [r for r in responses.values() if r.get("error") is None]
    assert 0 < len(answered) < 30
    spend = _spend(config)["acme"]
    assert len(spend) > 1  # the tenant really spread over partitions
    assert sum(v["u"] for v in spend.values()) == _charged(audits)["acme"]  # exact accounting
    notes = [n for a in audits for n in a["budgets"]]
    assert any(n["state"] == "soft" for n in notes) and all(n["mode"] == "spread" for n in notes)
    assert any(n.get("other_partitions_usd", 0) > 0 for n in notes)
    estimate = max(n["estimate_usd"] for n in notes)
    # with 0.3 s between requests the totals keep up: at most one request's estimate over
    assert sum(v["u"] for v in spend.values()) <= 400_000 + round(estimate * 1e6)
    delay = float(
        re.search(rb"^router_stream_budget_totals_delay_seconds (\S+)$", metrics_text, re.M).group(1)
    )
    print(f"spread budget enforcement lag (last applied record): {delay * 1000:.0f} ms")
    assert delay < 5.0
