"""The walking skeleton on a real broker: requests in, responses + audit out, exactly once."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from router_stream_dev.harness import produce, request_value

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

RULES = [
    {
        "type": "rules",
        "name": "by-content",
        "rules": [
            {"when": 'len(prompt) > 200 or "legal" in tags', "then": "strong"},
            {"when": 'fields.lang == "de"', "then": "strong"},
        ],
    }
]


def _config(kafka_bootstrap, model_servers, prefix, tmp_path, **kw):
    return make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        strategies=RULES,
        **kw,
    )


def test_thousand_requests_answered_exactly_once_with_audit(kafka_bootstrap, model_servers, prefix, tmp_path):
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path)
    setup_topics(config, partitions=4)
    worker = start_worker(tmp_path, config)
    assert worker.health()["candidates_reachable"] == {"cheap": True, "strong": True}
    try:
        records = []
        for i in range(1000):
            prompt = ("long question " * 20) if i % 3 == 0 else f"short question {i}"
            records.append((f"user-{i % 50}".encode(), request_value(f"r{i}", prompt)))
        asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], records))
        responses = read(config, "responses", expect=1000)
        audits = read(config, "audit", expect=1000)
    finally:
        worker.terminate()
    expected = {f"r{i}" for i in range(1000)}
    assert_exactly_once(ids_of(responses), expected, "responses")
    assert_exactly_once(ids_of(audits), expected, "audit")
    by_id = {json.loads(r.value)["request_id"]: json.loads(r.value) for r in responses}
    # the model names itself in its reply: the answer really came from the chosen candidate
    assert all(b["output"].startswith(f"[{b['candidate']}]") for b in by_id.values())
    audit0 = next(json.loads(r.value) for r in audits if json.loads(r.value)["request_id"] == "r0")
    assert audit0["chosen"] == "strong" and audit0["decided_by"] == "by-content"
    assert audit0["verdicts"][0]["outcome"] == "chose" and audit0["attempts"][0]["outcome"] == "ok"
    assert audit0["worker_id"] == "w1" and audit0["estimated_cost_usd"] > 0
    assert model_servers["cheap"].stats()["calls"] + model_servers["strong"].stats()["calls"] == 1000


def test_malformed_records_dead_lettered_and_neighbours_answered(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path)
    setup_topics(config, partitions=2)
    worker = start_worker(tmp_path, config)
    bad = [
        b"\xff\xfe not utf8",
        b"{not json",
        b"[1,2,3]",
        json.dumps({"prompt": "no id"}).encode(),
        json.dumps({"request_id": "", "prompt": "x"}).encode(),
        json.dumps({"request_id": "v9", "prompt": "x", "schema_version": 99}).encode(),
        json.dumps({"request_id": "nop"}).encode(),
        None,
        b"{" + b"x" * 900_000,
    ]  # its dead letter must stay producible (a full base64 copy was 1.2 MB)
    records = []
    for i, value in enumerate(bad):
        records.append((b"k", request_value(f"good-{i}", "hello")))
        records.append((b"k", value))
    try:
        asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], records))
        responses = read(config, "responses", expect=len(bad))
        dead = read(config, "dead_letter", expect=len(bad))
        assert worker.alive
    finally:
        worker.terminate()
    assert_exactly_once(ids_of(responses), {f"good-{i}" for i in range(len(bad))}, "responses")
    reasons = sorted(json.loads(r.value)["reason"] for r in dead)
    assert reasons == sorted(
        [
            "not_utf8",
            "not_json",
            "wrong_shape",
            "missing_request_id",
            "missing_request_id",
            "unsupported_schema_version",
            "invalid_request",
            "tombstone",
            "not_json",
        ]
    )
    big = [d for d in map(json.loads, (r.value for r in dead)) if d.get("value_bytes") == 900_001]
    assert len(big) == 1 and big[0]["value_truncated"] is True and len(big[0]["value_b64"]) < 400_000
    first = json.loads(dead[0].value)
    assert first["topic"] == config["topics"]["requests"] and first["offset"] >= 0 and first["message"]


def test_sticky_decision_survives_restart(kafka_bootstrap, model_servers, prefix, tmp_path):
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path)
    setup_topics(config, partitions=2)
    topic = config["topics"]["requests"]
    worker = start_worker(tmp_path, config)
    try:
        asyncio.run(produce(kafka_bootstrap, topic, [(b"alice", request_value("a1", "legal " * 50))]))
        assert len(read(config, "audit", expect=1)) == 1
    finally:
        assert worker.terminate() == 0
    worker = start_worker(tmp_path, config, name="w2")
    try:
        # short prompt: the rules alone would pick 'cheap'; the cached decision must keep 'strong'
        asyncio.run(
            produce(
                kafka_bootstrap,
                topic,
                [(b"alice", request_value("a2", "hi")), (b"bob", request_value("b1", "hi"))],
            )
        )
        audits = {
            json.loads(r.value)["request_id"]: json.loads(r.value) for r in read(config, "audit", expect=3)
        }
    finally:
        worker.terminate()
    assert audits["a1"]["cache_hit"] is False and audits["a1"]["chosen"] == "strong"
    assert audits["a2"]["cache_hit"] is True and audits["a2"]["chosen"] == "strong"
    assert audits["a2"]["decided_by"] == "by-content" and audits["a2"]["worker_id"] == "w2"
    assert audits["b1"]["chosen"] == "cheap" and audits["b1"]["decided_by"] == "default"


def test_api_key_sent_but_never_leaked(kafka_bootstrap, model_servers, prefix, tmp_path):
    secret = "sk-test-" + os.urandom(8).hex()
    config = _config(
        kafka_bootstrap,
        model_servers,
        prefix,
        tmp_path,
        candidate_extra={"cheap": {"api_key_env": "CHEAP_KEY"}, "strong": {"api_key_env": "CHEAP_KEY"}},
    )
    model_servers["strong"].set_faults(faults={"401": 1.0})  # errors must not echo the key either
    setup_topics(config, partitions=1)
    worker = start_worker(tmp_path, config, env={"CHEAP_KEY": secret})
    try:
        asyncio.run(
            produce(
                kafka_bootstrap,
                config["topics"]["requests"],
                [(b"k", request_value("s1", "hi")), (b"k2", request_value("s2", "legal " * 60))],
            )
        )
        responses = read(config, "responses", expect=2)
        audits = read(config, "audit", expect=2)
        metrics = worker.metrics_text()
    finally:
        worker.terminate()
    assert model_servers["cheap"].stats()["auth_present"] >= 1
    blob = b"".join(r.value for r in responses + audits).decode() + worker.log_path.read_text() + metrics
    assert secret not in blob
    failed = next(json.loads(r.value) for r in responses if json.loads(r.value)["request_id"] == "s2")
    assert failed["error"] and failed["error_kind"]


def test_expired_state_is_tombstoned_in_the_changelog(kafka_bootstrap, model_servers, prefix, tmp_path):
    config = _config(
        kafka_bootstrap,
        model_servers,
        prefix,
        tmp_path,
        extra={"cache": {"ttl_s": 1, "dedup_window_s": 1, "purge_interval_s": 1}},
    )
    setup_topics(config, partitions=1)
    worker = start_worker(tmp_path, config)
    try:
        asyncio.run(
            produce(
                kafka_bootstrap, config["topics"]["requests"], [(b"zed", request_value("z1", "legal " * 50))]
            )
        )
        assert len(read(config, "responses", expect=1)) == 1
        deadline = __import__("time").monotonic() + 30
        tombstoned: set[bytes] = set()
        while __import__("time").monotonic() < deadline and tombstoned != {b"k:zed", b"r:z1"}:
            tombstoned = {r.key for r in read(config, "changelog", idle=1) if r.value is None}
    finally:
        worker.terminate()
    assert tombstoned == {b"k:zed", b"r:z1"}
