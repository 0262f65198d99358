"""Resilience of the model calls on a real broker: fallbacks, breaker, Retry-After, rpm, deadlines.

Every test runs a real ``router-stream run`` worker against the real broker and loopback model
servers whose faults change at runtime, and checks in the read_committed view that every request
id comes out exactly once on both the responses and the audit topic (requests in = responses out),
whatever the model endpoints do. The audit's ``attempts`` are cross-checked against the calls the
model servers really saw. docs/resilience.md describes the behaviour these tests pin down.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from router_stream_dev.harness import produce, request_value
from router_stream_dev.model_server import ModelServer

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

#: a breaker that never opens, for tests about something else
NO_BREAKER = {"failure_threshold": 1000, "window_s": 30, "cooldown_s": 1}


# ---- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def servers():
    """Start named loopback model servers on demand (in threads); all are stopped afterwards."""
    started: list[ModelServer] = []

    def start(name: str, **faults: Any) -> ModelServer:
        server = ModelServer(name=name, seed=1234, **faults)
        server.start_in_thread()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _config(
    kafka_bootstrap,
    prefix,
    tmp_path,
    models: dict[str, ModelServer],
    *,
    default: str,
    candidate_extra: dict[str, dict[str, Any]],
    **kw: Any,
) -> dict[str, Any]:
    return make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in models.items()},
        default=default,
        candidate_extra=candidate_extra,
        **kw,
    )


def _send(config: dict[str, Any], records: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(produce(config["kafka"]["bootstrap_servers"], config["topics"]["requests"], records))


def _collect(config: dict[str, Any], ids: set[str], timeout: float = 120):
    """Read responses and audit (read_committed); each must hold every id exactly once."""
    responses = read(config, "responses", expect=len(ids), timeout=timeout, idle=1.0)
    audits = read(config, "audit", expect=len(ids), timeout=60, idle=1.0)
    assert_exactly_once(ids_of(responses), ids, "responses")
    assert_exactly_once(ids_of(audits), ids, "audit")
    resp = {json.loads(r.value)["request_id"]: json.loads(r.value) for r in responses}
    aud = {json.loads(r.value)["request_id"]: json.loads(r.value) for r in audits}
    return resp, aud, responses


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of ``name`` with exactly these labels (None when absent)."""
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))) == labels:
            return float(m.group(3))
    return None


def _calls_in_audit(audits: dict[str, dict], candidate: str) -> int:
    """Attempts that really reached ``candidate`` (skipped ones did not)."""
    return sum(
        1
        for a in audits.values()
        for att in a["attempts"]
        if att["candidate"] == candidate and att["outcome"] != "skipped"
    )


def _kinds(audit: dict, candidate: str) -> list[str | None]:
    return [
        att["error_kind"] if att["outcome"] != "ok" else "ok"
        for att in audit["attempts"]
        if att["candidate"] == candidate
    ]


# ---- (a) flaky primary ------------------------------------------------------------------------
def test_flaky_primary_half_503_every_request_answered_via_retry_or_fallback(
    kafka_bootstrap, servers, prefix, tmp_path
):
    n = 60
    # no Retry-After on the 503s, so the retry waits only the short backoff (0.1-0.2 s)
    primary = servers("primary", latency_ms=2, faults={"503": 0.5}, retry_after=None)
    backup = servers("backup", latency_ms=2)
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"primary": primary, "backup": backup},
        default="primary",
        candidate_extra={
            "primary": {"max_retries": 1, "fallbacks": ["backup"], "breaker": NO_BREAKER},
            "backup": {"max_retries": 0, "breaker": NO_BREAKER},
        },
    )
    setup_topics(config, partitions=4)
    worker = start_worker(tmp_path, config)
    try:
        _send(config, [(f"user-{i}".encode(), request_value(f"a{i}", f"question {i}")) for i in range(n)])
        resp, aud, _ = _collect(config, {f"a{i}" for i in range(n)})
        metrics = worker.metrics_text()
    finally:
        worker.terminate()

    assert not [r for r in resp.values() if r.get("error")], "a flaky primary must not surface errors"
    served = Counter(a["served_by"] for a in aud.values())
    assert set(served) <= {"primary", "backup"} and served["primary"] > 0 and served["backup"] > 0, served
    for rid, a in aud.items():
        assert resp[rid]["candidate"] == a["served_by"] and resp[rid]["output"].startswith(
            f"[{a['served_by']}]"
        )
        assert a["attempts"][-1]["outcome"] == "ok" and a["attempts"][-1]["candidate"] == a["served_by"]
        if a["served_by"] == "backup":  # both primary tries failed (first + 1 retry), then the fallback
            assert _kinds(a, "primary") == ["server_error", "server_error"], a["attempts"]
            assert [att["retry"] for att in a["attempts"]] == [0, 1, 0]
            assert all(att["status"] == 503 for att in a["attempts"][:2])
        else:
            assert _kinds(a, "primary") in (["ok"], ["server_error", "ok"]), a["attempts"]
    # the audit accounts for every call the servers saw, and nothing else
    assert _calls_in_audit(aud, "primary") == primary.stats()["calls"]
    assert _calls_in_audit(aud, "backup") == backup.stats()["calls"] == served["backup"]
    assert (
        sum(_kinds(a, "primary").count("server_error") for a in aud.values())
        == primary.stats()["modes"]["503"]
    )
    fallbacks = _metric(
        metrics, "router_stream_fallbacks_total", from_candidate="primary", to_candidate="backup"
    )
    assert fallbacks == served["backup"]
    print(
        f"\n(a) {n} in, {len(resp)} out; served {dict(served)}; primary calls {primary.stats()['calls']} "
        f"(503: {primary.stats()['modes'].get('503', 0)}), backup calls {backup.stats()['calls']}"
    )


# ---- (b) outage: breaker opens, traffic shifts, breaker closes --------------------------------
# The issue describes a 20 s outage; 8 s shows the same (breaker opens, half-open probes fail, it
# closes after recovery) with a 1 s cooldown and keeps the suite short.
OUTAGE_START_S, OUTAGE_S, TRAFFIC_S, RATE_PER_S = 2.0, 8.0, 15.0, 5


def test_outage_opens_breaker_shifts_to_fallback_and_recovers(kafka_bootstrap, servers, prefix, tmp_path):
    cooldown = 1.0
    primary = servers("primary", latency_ms=2, down_mode="503")
    backup = servers("backup", latency_ms=2)
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"primary": primary, "backup": backup},
        default="primary",
        candidate_extra={
            "primary": {
                "max_retries": 0,
                "fallbacks": ["backup"],
                "breaker": {"failure_threshold": 3, "window_s": 5, "cooldown_s": cooldown},
            },
            "backup": {"max_retries": 1, "breaker": NO_BREAKER},
        },
    )
    setup_topics(config, partitions=4)
    worker = start_worker(tmp_path, config)
    n = int(TRAFFIC_S * RATE_PER_S)
    ids = {f"b{i}" for i in range(n)}
    samples: list[tuple[float, float | None]] = []  # (wall time, breaker gauge of primary)
    window: dict[str, float] = {}

    async def traffic() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
        await producer.start()
        stop = asyncio.Event()

        async def scrape() -> None:
            while not stop.is_set():
                try:
                    text = await asyncio.to_thread(worker.metrics_text)
                    samples.append(
                        (time.time(), _metric(text, "router_stream_breaker_open", candidate="primary"))
                    )
                except OSError:
                    pass
                await asyncio.sleep(0.25)

        scraper = asyncio.create_task(scrape())
        try:
            t0 = time.monotonic()
            for i in range(n):
                at = i / RATE_PER_S
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                if "down" not in window and at >= OUTAGE_START_S:
                    primary.set_faults(faults={"down": 1.0})
                    window["down"] = time.time()
                if "up" not in window and at >= OUTAGE_START_S + OUTAGE_S:
                    primary.set_faults(faults={})
                    window["up"] = time.time()
                await producer.send_and_wait(
                    config["topics"]["requests"],
                    key=f"user-{i}".encode(),
                    value=request_value(f"b{i}", f"question {i}"),
                )
        finally:
            await producer.stop()
            await asyncio.sleep(1.0)
            stop.set()
            await scraper

    try:
        asyncio.run(traffic())
        resp, aud, _ = _collect(config, ids)
        final_metrics = worker.metrics_text()
        health = worker.health() or {}
    finally:
        worker.terminate()

    down, up = window["down"], window["up"]
    assert not [r for r in resp.values() if r.get("error")], "the fallback must answer during the outage"
    received = {rid: a["received_at"] / 1000 for rid, a in aud.items()}
    during = [rid for rid, t in received.items() if down + 0.3 <= t <= up - 0.3]
    after = [rid for rid, t in received.items() if t >= up + cooldown + 1.0]
    before = [rid for rid, t in received.items() if t < down - 0.3]
    assert len(during) >= 25 and len(after) >= 5 and before, (len(before), len(during), len(after))
    # before: the primary answers
    assert all(aud[r]["served_by"] == "primary" for r in before)
    # during: the fallback answers; the breaker skips the primary most of the time
    assert all(aud[r]["served_by"] == "backup" for r in during)
    skipped = [r for r in during if "breaker_open" in _kinds(aud[r], "primary")]
    assert len(skipped) >= len(during) // 2, f"only {len(skipped)} of {len(during)} skipped the open breaker"
    for r in during:
        assert _kinds(aud[r], "primary") in (["breaker_open"], ["server_error"]), aud[r]["attempts"]
    assert primary.stats()["modes"]["down"] <= len(during) // 2 + 3  # calls the dead endpoint saw
    gauge_during = [v for t, v in samples if down + 1.0 <= t <= up]
    assert 1.0 in gauge_during, f"/metrics never showed the breaker open: {gauge_during}"
    # after: the breaker closed again and the primary answers at once
    assert all(aud[r]["served_by"] == "primary" and _kinds(aud[r], "primary") == ["ok"] for r in after)
    assert _metric(final_metrics, "router_stream_breaker_open", candidate="primary") == 0.0
    assert health.get("breakers", {}).get("primary") == "closed"
    # the audit accounts for every call
    assert _calls_in_audit(aud, "primary") == primary.stats()["calls"]
    assert _calls_in_audit(aud, "backup") == backup.stats()["calls"]
    print(
        f"\n(b) {n} in, {len(resp)} out; before/during/after outage {len(before)}/{len(during)}/{len(after)}; "
        f"during: {len(skipped)} breaker_open skips, primary saw {primary.stats()['modes']['down']} calls while down; "
        f"served {dict(Counter(a['served_by'] for a in aud.values()))}; "
        f"gauge samples in outage {Counter(gauge_during)}"
    )


# ---- (c) 429 storm with Retry-After; rpm budget ----------------------------------------------
def test_429_storm_honours_retry_after_and_rpm_budget_is_respected(
    kafka_bootstrap, servers, prefix, tmp_path
):
    n_throttled, storm, n_limited, rpm = 8, 16, 30, 10
    retry_after = 1.0
    throttled = servers("throttled", latency_ms=2, retry_after=retry_after)
    throttled.script(*["429"] * storm)  # the next 16 calls: 429 with "Retry-After: 1"
    limited = servers("limited", latency_ms=2)
    backup = servers("backup", latency_ms=2)
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"throttled": throttled, "limited": limited, "backup": backup},
        default="backup",
        extra={"allow_request_candidate_field": "candidate"},
        candidate_extra={
            "throttled": {"max_retries": 4, "fallbacks": ["backup"], "breaker": NO_BREAKER},
            "limited": {
                "max_retries": 0,
                "fallbacks": ["backup"],
                "breaker": NO_BREAKER,
                "rate_limit": {"requests_per_minute": rpm, "max_wait_ms": 0},
            },
            "backup": {"max_retries": 0, "breaker": NO_BREAKER},
        },
    )
    # one partition: every request is in the first batch, so the storm hits them all at once
    setup_topics(config, partitions=1)
    bucket_born = time.monotonic()  # the worker's buckets start full, no earlier than this
    worker = start_worker(tmp_path, config)
    records = [
        (f"t-{i}".encode(), request_value(f"t{i}", f"question {i}", fields={"candidate": "throttled"}))
        for i in range(n_throttled)
    ]
    records += [
        (f"l-{i}".encode(), request_value(f"l{i}", f"question {i}", fields={"candidate": "limited"}))
        for i in range(n_limited)
    ]
    try:
        _send(config, records)
        resp, aud, _ = _collect(config, {json.loads(v)["request_id"] for _, v in records})
        elapsed = time.monotonic() - bucket_born
        metrics = worker.metrics_text()
    finally:
        worker.terminate()

    assert not [r for r in resp.values() if r.get("error")]
    # Retry-After: every 429 made its request wait at least Retry-After before the next try
    throttles = 0
    for i in range(n_throttled):
        a = aud[f"t{i}"]
        kinds = _kinds(a, "throttled")
        k = kinds.count("throttled")
        throttles += k
        assert a["served_by"] == "throttled" and kinds == ["throttled"] * k + ["ok"], a["attempts"]
        assert all(att["status"] == 429 for att in a["attempts"][:k])
        # attempts carry no start time: the time between them is the dispatch time minus the calls
        waited_ms = a["finished_at"] - a["received_at"] - sum(att["latency_ms"] for att in a["attempts"])
        assert waited_ms >= k * retry_after * 1000 - 20, f"t{i}: {k} x 429 but waited only {waited_ms:.0f} ms"
    assert throttles == storm == throttled.stats()["modes"]["429"]
    assert _metric(metrics, "router_stream_retries_total", candidate="throttled") == storm
    # rpm: the limited endpoint saw no more calls than its budget allows in the time the bucket lived
    allowed = rpm + math.ceil(elapsed * rpm / 60.0)
    calls = limited.stats()["calls"]
    served_limited = sum(1 for i in range(n_limited) if aud[f"l{i}"]["served_by"] == "limited")
    skipped = sum(1 for i in range(n_limited) if _kinds(aud[f"l{i}"], "limited") == ["rate_limited"])
    assert rpm <= calls <= allowed, f"limited saw {calls} calls, budget {allowed} in {elapsed:.1f}s"
    assert served_limited == calls and skipped == n_limited - calls
    assert all(aud[f"l{i}"]["served_by"] in ("limited", "backup") for i in range(n_limited))
    print(
        f"\n(c) {len(records)} in, {len(resp)} out; {storm} x 429 over {n_throttled} requests, slowest "
        f"{max(aud[f't{i}']['finished_at'] - aud[f't{i}']['received_at'] for i in range(n_throttled))} ms; "
        f"limited: {calls} calls (budget {allowed} in {elapsed:.1f}s), {skipped} rate_limited -> backup"
    )


# ---- (d) every candidate down, then back ------------------------------------------------------
def test_all_candidates_down_every_request_gets_an_error_then_recovers(
    kafka_bootstrap, servers, prefix, tmp_path
):
    n, cooldown = 20, 1.5
    breaker = {"failure_threshold": 3, "window_s": 10, "cooldown_s": cooldown}
    primary = servers("primary", latency_ms=2, down_mode="close", faults={"down": 1.0})
    backup = servers("backup", latency_ms=2, down_mode="close", faults={"down": 1.0})
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"primary": primary, "backup": backup},
        default="primary",
        candidate_extra={
            "primary": {
                "max_retries": 1,
                "request_timeout_ms": 2000,
                "fallbacks": ["backup"],
                "breaker": breaker,
            },
            "backup": {"max_retries": 1, "request_timeout_ms": 2000, "breaker": breaker},
        },
    )
    setup_topics(config, partitions=4)
    worker = start_worker(tmp_path, config)
    down_ids = {f"d{i}" for i in range(n)}
    try:
        _send(config, [(f"user-{i}".encode(), request_value(f"d{i}", f"question {i}")) for i in range(n)])
        resp, aud, _ = _collect(config, down_ids)
        outage_health = worker.health() or {}
        alive_after_outage = worker.alive and bool(outage_health.get("ready"))
        outage_metrics = worker.metrics_text()
        for s in (primary, backup):
            s.set_faults(faults={})
        time.sleep(cooldown + 0.5)
        # the first request after the cooldown is the half-open probe that closes the breaker ...
        _send(config, [(b"user-probe", request_value("probe", "are you back?"))])
        # ... then normal traffic flows again
        _send(config, [(f"user-{i}".encode(), request_value(f"ok{i}", f"question {i}")) for i in range(10)])
        resp2, aud2, _ = _collect(config, down_ids | {"probe"} | {f"ok{i}" for i in range(10)})
        assert worker.alive
    finally:
        worker.terminate()

    assert alive_after_outage
    kinds = Counter(r["error_kind"] for r in resp.values())
    assert all(r["error"] and r["error_kind"] and r.get("output") is None for r in resp.values()), resp
    assert set(kinds) <= {"connection", "breaker_open"}, kinds
    for a in aud.values():
        assert a["error"] and a.get("served_by") is None and a["attempts"]
        assert not [att for att in a["attempts"] if att["outcome"] == "ok"]
        assert {att["candidate"] for att in a["attempts"]} == {"primary", "backup"}
    # a closed connection is a retryable "connection" failure; the breakers then cut the retries short
    assert {
        att["error_kind"] for a in aud.values() for att in a["attempts"] if att["outcome"] == "error"
    } == {"connection"}
    assert _calls_in_audit(aud, "primary") == primary.stats()["modes"]["down"]
    assert _calls_in_audit(aud, "backup") == backup.stats()["modes"]["down"]
    # both breakers opened; by now the cooldown may have passed (reading the state, e.g. by
    # /health/ready, turns an expired open breaker half open: gauge 0.5) but neither is closed
    for name in ("primary", "backup"):
        assert outage_health["breakers"][name] in ("open", "half_open")
        assert _metric(outage_metrics, "router_stream_breaker_open", candidate=name) in (1.0, 0.5)
    # recovery: the same records still once each, and every new request answered by the primary
    for rid in ["probe"] + [f"ok{i}" for i in range(10)]:
        assert not resp2[rid].get("error") and aud2[rid]["served_by"] == "primary", aud2[rid]
    assert all(resp2[rid] == resp[rid] for rid in down_ids)
    print(
        f"\n(d) {n} in, {len(resp)} out, all errors {dict(kinds)}; servers saw primary "
        f"{primary.stats()['modes']['down']} / backup {backup.stats()['modes']['down']} calls while down; "
        f"after recovery 11 in, 11 ok"
    )


# ---- (e) a slow candidate does not stall other keys ------------------------------------------
def test_slow_candidate_does_not_stall_other_keys(kafka_bootstrap, servers, prefix, tmp_path):
    n_fast, slow_ms = 40, 2000
    fast = servers("fast", latency_ms=2)
    slow = servers("slow", latency_ms=slow_ms)
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"fast": fast, "slow": slow},
        default="fast",
        strategies=[
            {"type": "rules", "name": "by-key", "rules": [{"when": '"slow" in key', "then": "slow"}]}
        ],
        candidate_extra={"fast": {"breaker": NO_BREAKER}, "slow": {"breaker": NO_BREAKER}},
    )
    setup_topics(config, partitions=4)
    worker = start_worker(tmp_path, config)
    # key A's two requests go first (same key: they run one after the other, ~4 s in all)
    records = [(b"slow-A", request_value(f"s{i}", f"slow question {i}")) for i in range(2)]
    records += [
        (f"user-{i % 20}".encode(), request_value(f"f{i}", f"fast question {i}")) for i in range(n_fast)
    ]
    ids = {json.loads(v)["request_id"] for _, v in records}
    try:
        _send(config, records)
        resp, aud, raw = _collect(config, ids)
    finally:
        worker.terminate()

    assert not [r for r in resp.values() if r.get("error")]
    assert all(aud[f"s{i}"]["served_by"] == "slow" for i in range(2))
    assert all(aud[f"f{i}"]["served_by"] == "fast" for i in range(n_fast))
    # handler level: every fast answer was produced before the first slow one
    first_slow = min(resp[f"s{i}"]["produced_at"] for i in range(2))
    last_fast = max(resp[f"f{i}"]["produced_at"] for i in range(n_fast))
    assert last_fast < first_slow, (
        f"fast answers finished {last_fast - first_slow} ms after the first slow one"
    )
    # commit level (record timestamps = time of the transactional send): keys on other partitions
    # than key A's are visible before A's first answer
    part = {json.loads(r.value)["request_id"]: r.partition for r in raw}
    stamp = {json.loads(r.value)["request_id"]: r.timestamp for r in raw}
    slow_part = part["s0"]
    first_slow_commit = min(stamp[f"s{i}"] for i in range(2))
    other = [f"f{i}" for i in range(n_fast) if part[f"f{i}"] != slow_part]
    same = [f"f{i}" for i in range(n_fast) if part[f"f{i}"] == slow_part]
    assert other and max(stamp[r] for r in other) < first_slow_commit, "other partitions waited for key A"
    # same partition: the answer is ready early, but rides in the batch transaction with key A's
    hol = sorted(stamp[r] - resp[r]["produced_at"] for r in same)
    print(
        f"\n(e) {len(records)} in, {len(resp)} out; last fast answer {first_slow - last_fast} ms before the first "
        f"slow one; other partitions ({len(other)} fast) committed {first_slow_commit - max(stamp[r] for r in other)}"
        f" ms before it; same partition ({len(same)} fast) waited ready->commit "
        f"{hol[0] if hol else '-'}..{hol[-1] if hol else '-'} ms"
    )


# ---- deadline ---------------------------------------------------------------------------------
def test_deadline_shorter_than_model_latency(kafka_bootstrap, servers, prefix, tmp_path):
    slow = servers("slow", latency_ms=3000)
    fast = servers("fast", latency_ms=2)
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        {"slow": slow, "fast": fast},
        default="slow",
        candidate_extra={
            "slow": {
                "max_retries": 2,
                "request_timeout_ms": 10_000,
                "fallbacks": ["fast"],
                "breaker": NO_BREAKER,
            },
            "fast": {"breaker": NO_BREAKER},
        },
    )
    setup_topics(config, partitions=2)
    worker = start_worker(tmp_path, config)
    records = [
        (b"user-1", request_value("short", "hurry", deadline_ms=300)),
        (b"user-2", request_value("roomy", "take your time", deadline_ms=8000)),
    ]
    try:
        _send(config, records)
        resp, aud, _ = _collect(config, {"short", "roomy"})
        metrics = worker.metrics_text()
    finally:
        worker.terminate()

    short, a = resp["short"], aud["short"]
    assert short["error"] and short["error_kind"] == "deadline_exceeded" and short.get("output") is None
    assert a["error"] and a.get("served_by") is None
    # one call to slow, cut off at the deadline; no retry and no fallback call after it
    (first, *rest) = a["attempts"]
    assert (
        first["candidate"] == "slow"
        and first["outcome"] == "error"
        and first["error_kind"] == "deadline_exceeded"
    )
    assert 250 <= first["latency_ms"] <= 1500, first
    assert [(att["candidate"], att["outcome"], att["error_kind"]) for att in rest] == [
        ("fast", "skipped", "deadline_exceeded")
    ]
    assert a["finished_at"] - a["received_at"] < 2000
    assert fast.stats()["calls"] == 0
    # the same candidate within a roomier deadline answers
    assert not resp["roomy"].get("error") and aud["roomy"]["served_by"] == "slow"
    assert slow.stats()["calls"] == 2
    assert (
        _metric(
            metrics,
            "router_stream_requests_total",
            candidate="slow",
            decided_by="default",
            outcome="deadline_exceeded",
        )
        == 1.0
    )
    print(
        f"\n(deadline) 2 in, 2 out; deadline 300 ms vs 3000 ms latency: error_kind {short['error_kind']}, "
        f"cut off after {first['latency_ms']:.0f} ms, answered in {a['finished_at'] - a['received_at']} ms"
    )
