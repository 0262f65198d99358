"""A hostile stream on a real broker: every record ends as exactly one response or dead letter.

10,000 records on 4 partitions, a third of them hostile (every kind of docs/dead-letters.md, plus
null keys, producer retries, unknown candidates and junk headers), mixed at random with valid
requests under a fixed seed. In the read_committed view:

* records in = responses + dead letters;
* every dead letter is the record at its (partition, offset), once, with the expected reason and
  the original bytes; every answered record has one audit record (by source offset);
* every valid request_id is answered once by a model (``duplicate: false``) and each producer
  retry of it once more with ``duplicate: true`` and the first answer's candidate and output;
* the loopback models saw exactly one call per distinct valid request_id (none for duplicates,
  none for dead letters);
* traceparent passes through to the response (Kafka header) and audit (``headers``); unknown
  headers do not;
* the worker is alive and ready at the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from router_stream.schemas import SCHEMA_VERSION
from router_stream_dev.model_server import ModelServer

from .helpers import make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

SEED, N, PARTITIONS = 20_240_611, 10_000, 4
MAX_RECORD_BYTES = 8_000
CHEAP_WINDOW, STRONG_WINDOW = 200, 400  # tokens ≈ chars / 4: > 1,600 chars fits no candidate
CHOICE_FIELD = "model_choice"
TRACEPARENT = "00-{:032x}-{:016x}-01"

# kind -> (dead-letter reason, or None when the record is answered)
HOSTILE: dict[str, str | None] = {
    "tombstone": "tombstone",
    "oversized": "oversized",
    "not_utf8": "not_utf8",
    "lone_surrogate": "not_utf8",
    "not_json": "not_json",
    "nan": "not_json",
    "wrong_shape": "wrong_shape",
    "missing_request_id": "missing_request_id",
    "unsupported_schema_version": "unsupported_schema_version",
    "invalid_request": "invalid_request",
    "context_window": "context_window",
    "null_key": None,  # answered; its cache scope is the request_id
    "duplicate": None,  # a producer retry: answered again from the first answer
    "unknown_candidate": None,  # a routing miss: answered by the routing pipeline's choice
    "junk_headers": None,  # unknown headers ignored, traceparent kept
    "fits_one_candidate": None,  # too big for cheap, fits strong: the fallback chain serves it
}


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    kind: str
    headers: list[tuple[str, bytes | None]]
    partition: int | None = None  # explicit only for null keys (so a retry lands where the first did)
    request_id: str | None = None  # for answered records
    traced: str | None = None
    choice: str | None = None


def _prompt(rng: random.Random, rid: str, lo: int = 10, hi: int = 200) -> str:
    words = ["route", "the", "model", "stream", "kafka", "answer", "why", "how", "cost", "token"]
    text = f"{rid} " + " ".join(rng.choice(words) for _ in range(hi))
    return text[: rng.randint(max(lo, len(rid) + 2), max(hi, lo))]


def _valid(rng: random.Random, i: int, kind: str = "valid") -> Rec:
    rid = f"v{i}"
    body: dict[str, Any] = {"request_id": rid}
    prompt = _prompt(rng, rid)
    if kind == "fits_one_candidate":
        prompt = _prompt(rng, rid, 900, 1500)
    if rng.random() < 0.3:
        body["messages"] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if rng.random() < 0.2:
        body["schema_version"] = 1
    if rng.random() < 0.2:
        body["params"] = {"temperature": round(rng.random(), 2)}
    choice = None
    if kind == "unknown_candidate":
        choice = rng.choice(["gpt-9", "", "CHEAP", "strong "])
        body["fields"] = {CHOICE_FIELD: choice}
    elif rng.random() < 0.1:
        choice = rng.choice(["cheap", "strong"])
        body["fields"] = {CHOICE_FIELD: choice, "lang": "en"}
    headers: list[tuple[str, bytes | None]] = []
    traced = None
    if rng.random() < 0.3 or kind == "junk_headers":
        traced = TRACEPARENT.format(rng.getrandbits(128), rng.getrandbits(64))
        headers.append(("traceparent", traced.encode()))
    if kind == "junk_headers":
        headers += [
            ("x-junk", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))),
            ("", b"empty name"),
            ("content-type", b"application/evil"),
            ("tracestate", None),
            ("x-" + "h" * 200, b"\xff\xfe\x00" * 50),
        ]
    key: bytes | None = f"user-{rng.randrange(300)}".encode()
    partition = None
    if kind == "null_key":
        key, partition = None, zlib.crc32(rid.encode()) % PARTITIONS
    return Rec(key, json.dumps(body).encode(), kind, headers, partition, rid, traced, choice)


def _hostile(rng: random.Random, i: int, kind: str) -> Rec:
    key = f"user-{rng.randrange(300)}".encode() if rng.random() < 0.8 or kind == "tombstone" else None
    rid = f"h{i}"

    def req(**kw: Any) -> bytes:
        return json.dumps({"request_id": rid, "prompt": f"{rid} hi", **kw}).encode()

    if kind == "tombstone":
        value = None
    elif kind == "oversized":
        value = req(prompt="x" * rng.randint(MAX_RECORD_BYTES, 3 * MAX_RECORD_BYTES))
    elif kind == "not_utf8":
        value = rng.choice(
            [
                bytes([0xFF]) + rng.randbytes(rng.randint(0, 50)),
                f'{{"request_id": "{rid}", "prompt": "café"}}'.encode("latin-1"),
                req().replace(b"hi", b"\xc3\x28"),
                "é".encode("utf-16"),
            ]
        )
    elif kind == "lone_surrogate":
        value = rng.choice(
            [req(prompt="\ud800 dangling"), json.dumps({"request_id": "\udfff", "prompt": "x"}).encode()]
        )
    elif kind == "not_json":
        value = rng.choice(
            [
                b"",
                b"{not json",
                req()[:-1],
                b"\xef\xbb\xbf" + req(),
                b"{'request_id': 'x'}",
                b"[" * 5000,
                req() + b" trailing",
            ]
        )
    elif kind == "nan":
        value = req(params={"temperature": rng.choice([float("nan"), float("inf"), float("-inf")])})
    elif kind == "wrong_shape":
        value = rng.choice(
            [b"[1, 2, 3]", b'"a string"', b"42", b"null", b"true", json.dumps([json.loads(req())]).encode()]
        )
    elif kind == "missing_request_id":
        value = rng.choice(
            [
                json.dumps({"prompt": "x"}).encode(),
                req(request_id=""),
                req(request_id="  \t"),
                req(request_id=123),
                req(request_id=None),
                req(request_id="r" * 300),
            ]
        )
    elif kind == "unsupported_schema_version":
        value = req(
            schema_version=rng.choice(
                [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2, 99, str(SCHEMA_VERSION + 1), 0]
            )
        )
    elif kind == "invalid_request":
        value = rng.choice(
            [
                json.dumps({"request_id": rid}).encode(),
                req(prompt=""),
                req(prompt=5),
                req(messages=[{"role": "user", "content": None}]),
                req(messages=[{"role": "user"}]),
                req(deadline_ms=0),
                req(tags="oops"),
                req(fields=[1]),
                req(deadline_ms=10**30),
            ]
        )
    elif kind == "context_window":
        value = req(prompt="y" * rng.randint(4 * STRONG_WINDOW + 10, MAX_RECORD_BYTES - 200))
    else:
        raise AssertionError(kind)
    return Rec(key, value, kind, [])


def build_stream(seed: int = SEED, n: int = N) -> list[Rec]:
    rng = random.Random(seed)
    kinds = sorted(HOSTILE)
    out: list[Rec] = []
    answered: list[Rec] = []
    for i in range(n):
        if rng.random() >= 1 / 3:
            rec = _valid(rng, i)
        else:
            kind = rng.choice(kinds)
            if kind == "duplicate" and answered:
                first = rng.choice(answered[-400:] if rng.random() < 0.7 else answered)
                rec = Rec(
                    first.key,
                    first.value,
                    "duplicate",
                    list(first.headers),
                    first.partition,
                    first.request_id,
                    first.traced,
                    first.choice,
                )
            elif kind == "duplicate" or HOSTILE[kind] is None:
                rec = _valid(rng, i, kind if kind != "duplicate" else "valid")
            else:
                rec = _hostile(rng, i, kind)
        if rec.request_id is not None and rec.kind != "duplicate":
            answered.append(rec)
        out.append(rec)
    return out


async def _produce(bootstrap: str, topic: str, records: list[Rec]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, key=r.key, value=r.value, headers=r.headers or None, partition=r.partition
            )
            for r in records
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$" if labels else rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def fast_models():
    servers = {
        "cheap": ModelServer(name="cheap", latency_ms=1),
        "strong": ModelServer(name="strong", latency_ms=1),
    }
    for s in servers.values():
        s.start_in_thread()
    yield servers
    for s in servers.values():
        s.stop()


def test_stream_generator_is_fixed_and_covers_every_kind():
    a, b = build_stream(), build_stream()
    assert [(r.key, r.value, r.headers, r.partition) for r in a] == [
        (r.key, r.value, r.headers, r.partition) for r in b
    ]
    kinds = Counter(r.kind for r in a)
    assert set(HOSTILE) <= set(kinds), set(HOSTILE) - set(kinds)
    hostile = sum(n for k, n in kinds.items() if k != "valid")
    assert 0.30 * N < hostile < 0.37 * N


def test_ten_thousand_records_with_a_hostile_third(kafka_bootstrap, fast_models, prefix, tmp_path):
    started = time.monotonic()
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in fast_models.items()},
        default="cheap",
        candidate_extra={
            "cheap": {"context_window": CHEAP_WINDOW, "fallbacks": ["strong"]},
            "strong": {"context_window": STRONG_WINDOW},
        },
        extra={
            "kafka": {"max_record_bytes": MAX_RECORD_BYTES},
            "allow_request_candidate_field": CHOICE_FIELD,
        },
    )
    setup_topics(config, partitions=PARTITIONS)
    stream = build_stream()
    answered = [i for i, r in enumerate(stream) if r.request_id is not None]
    expected_dead = {i: HOSTILE[r.kind] for i, r in enumerate(stream) if r.request_id is None}
    per_rid = Counter(stream[i].request_id for i in answered)
    worker = start_worker(tmp_path, config)
    try:
        t0 = time.monotonic()
        where = asyncio.run(_produce(kafka_bootstrap, config["topics"]["requests"], stream))
        produced_s = time.monotonic() - t0
        responses = read(config, "responses", expect=len(answered), timeout=150, idle=2)
        dead = read(config, "dead_letter", expect=len(expected_dead), timeout=60, idle=1)
        audits = read(config, "audit", expect=len(answered), timeout=60, idle=1)
        processed_s = time.monotonic() - t0
        assert worker.alive, worker.tail()
        assert (worker.health() or {}).get("ready"), worker.tail()
        metrics = worker.metrics_text()
    finally:
        code = worker.terminate()
    assert code == 0, worker.tail()
    at = {pos: i for i, pos in enumerate(where)}
    topic = config["topics"]["requests"]

    # ---- count in = responses + dead letters (read_committed)
    assert len(responses) + len(dead) == N, (len(responses), len(dead), N)

    # ---- dead letters: the record at (partition, offset), once, with its reason and bytes
    dead_at: dict[int, dict[str, Any]] = {}
    for r in dead:
        d = json.loads(r.value)
        i = at[(d["partition"], d["offset"])]
        assert i not in dead_at, f"two dead letters for record {i}"
        dead_at[i] = d
        assert d["topic"] == topic and d["message"] and d["error_class"] == "PoisonRecord"
        original = stream[i].value
        assert (base64.b64decode(d["value_b64"]) if "value_b64" in d else None) == original
        assert r.key == stream[i].key
    wrong = {
        i: (dead_at[i]["reason"] if i in dead_at else None, want)
        for i, want in expected_dead.items()
        if dead_at.get(i, {}).get("reason") != want
    }
    assert not wrong, (
        f"{len(wrong)} records with the wrong dead letter (got, want): {list(wrong.items())[:10]}"
    )
    assert set(dead_at) == set(expected_dead)
    for i, d in dead_at.items():  # the request_id travels with the dead letter whenever it could be read
        if d["reason"] in ("context_window", "invalid_request") or (
            d["reason"] == "unsupported_schema_version" and b'"request_id": "h' in (stream[i].value or b"")
        ):
            assert d["request_id"] == f"h{i}", d

    # ---- responses: each valid request_id answered once, each retry once more as a duplicate
    by_rid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    resp_headers: dict[str, list[dict[str, bytes]]] = defaultdict(list)
    for r in responses:
        body = json.loads(r.value)
        by_rid[body["request_id"]].append(body)
        resp_headers[body["request_id"]].append(dict(r.headers or ()))
    counts = Counter({rid: len(v) for rid, v in by_rid.items()})
    assert counts == per_rid, (
        f"responses per request_id differ: {list((counts - per_rid).items())[:5]} extra, "
        f"{list((per_rid - counts).items())[:5]} missing"
    )
    retries = 0
    for rid, bodies in by_rid.items():
        firsts = [b for b in bodies if not b.get("duplicate")]
        assert len(firsts) == 1, (rid, bodies)
        first = firsts[0]
        assert first.get("error") is None and first["output"].startswith(
            f"[{first['candidate']}] answer to: {rid} "
        )
        for again in bodies:
            if again is not first:
                retries += 1
                assert again["duplicate"] is True
                assert (again["candidate"], again["output"]) == (first["candidate"], first["output"]), (
                    first,
                    again,
                )
    assert retries == sum(n - 1 for n in per_rid.values()) > 100

    # ---- audits: one per answered record (by source offset); routing choices and headers
    audit_at: dict[int, dict[str, Any]] = {}
    for r in audits:
        a = json.loads(r.value)
        i = at[(a["source"]["partition"], a["source"]["offset"])]
        assert i not in audit_at, f"two audit records for record {i}"
        audit_at[i] = a
    assert set(audit_at) == set(answered)
    for i in answered:
        rec, a = stream[i], audit_at[i]
        assert a["request_id"] == rec.request_id
        assert a.get("duplicate", False) == (rec.kind == "duplicate")
        if rec.traced:
            assert a["headers"] == {"traceparent": rec.traced}, a["headers"]
            assert all(h.get("traceparent") == rec.traced.encode() for h in resp_headers[rec.request_id])
        else:
            assert a.get("headers", {}) == {} and all(
                "traceparent" not in h for h in resp_headers[rec.request_id]
            )
        # only trace headers travel on (a null tracestate of a junk record included); the rest is dropped
        assert all(set(h) <= {"traceparent", "tracestate"} for h in resp_headers[rec.request_id])
        if rec.kind == "duplicate":
            continue
        first = next(b for b in by_rid[rec.request_id] if not b.get("duplicate"))
        if rec.kind == "unknown_candidate":
            assert a["verdicts"][0]["strategy"] == "request" and a["verdicts"][0]["outcome"] == "miss", a
            assert a["decided_by"] != "request"
        elif rec.choice in ("cheap", "strong") and rec.kind != "fits_one_candidate":
            assert a["decided_by"] == "request" and first["candidate"] == rec.choice, a
        if rec.kind == "fits_one_candidate":
            assert first["candidate"] == "strong", first
        if rec.key is None:
            assert a["key"] == f"request:{rec.request_id}", a

    # ---- no model call for a duplicate or a dead letter
    calls = sum(s.stats()["calls"] for s in fast_models.values())
    assert calls == len(per_rid), f"{calls} model calls for {len(per_rid)} distinct valid requests"

    # ---- the worker's own counters agree
    reasons = Counter(d["reason"] for d in dead_at.values())
    for reason, n in reasons.items():
        assert _metric(metrics, "router_stream_dead_letters_total", reason=reason) == n, reason
    assert _metric(metrics, "router_stream_duplicate_requests_total") == retries

    kinds = Counter(r.kind for r in stream)
    print(
        f"\n{N} records in {PARTITIONS} partitions: {len(responses)} responses ({retries} duplicates), "
        f"{len(dead)} dead letters; {calls} model calls; produced in {produced_s:.1f}s, all out in "
        f"{processed_s:.1f}s, test {time.monotonic() - started:.1f}s"
    )
    print("records by kind: " + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())))
    print("dead letters by reason: " + ", ".join(f"{k}={n}" for k, n in sorted(reasons.items())))
