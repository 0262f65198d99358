"""On a real broker: `router-stream state get` / `state evict` and the worker's `/state` (issue 17 §3).

A key's sticky decision is read from the committed changelog (also with no worker running and
after a restart), evicted through an authorised control record (the key's next request is decided
afresh), and a forged control record (no header, wrong secret) is a dead letter that evicts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from router_stream.processing.control import CONTROL_HEADER, control_body
from router_stream_dev.harness import produce, write_config

from .helpers import make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

SECRET = "it-" + os.urandom(12).hex()
ENV = {"RS_CONTROL_SECRET": SECRET}
STRATEGIES = [{"type": "rules", "name": "by-tag", "rules": [{"when": '"hard" in tags', "then": "strong"}]}]


def _value(rid: str, tags: list[str] | None = None) -> bytes:
    return json.dumps({"request_id": rid, "prompt": "hi", "tags": tags or []}).encode()


def _cli(cfg: Path, *args: str, secret: str | None = SECRET) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RS_CONTROL_SECRET"}
    if secret is not None:
        env["RS_CONTROL_SECRET"] = secret
    proc = subprocess.run(
        [sys.executable, "-m", "router_stream.cli", "state", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _get(cfg: Path, key: str) -> tuple[int, dict]:
    code, out, err = _cli(cfg, "get", "--key", key, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def _http(port: int, query: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/state?{query}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_get_evict_forgery_restart_and_http(kafka_bootstrap, model_servers, prefix, tmp_path):
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        strategies=STRATEGIES,
        extra={"control": {"secret_env": "RS_CONTROL_SECRET"}},
    )
    cfg = write_config(tmp_path / "cli.yaml", config)
    setup_topics(config, partitions=3)
    topic = config["topics"]["requests"]
    worker = start_worker(tmp_path, config, env=ENV)
    try:
        asyncio.run(
            produce(kafka_bootstrap, topic, [(b"user-0", _value("r1", ["hard"])), (b"user-0", _value("r2"))])
        )
        assert len(read(config, "audit", expect=2)) == 2

        code, got = _get(cfg, "user-0")
        assert code == 0 and got["found"], got
        entry = got["entries"][0]
        d = entry["decision"]
        assert (d["candidate"], d["decided_by"], d["ttl_s"], d["expired"]) == (
            "strong",
            "by-tag",
            3600.0,
            False,
        )
        assert 0 <= d["age_s"] < 120 and entry["count"] == 2 and entry["recent_request_ids"] == ["r1", "r2"]
        assert _get(cfg, "nobody")[0] == 1

        status, body = _http(worker.metrics_port, "key=user-0")
        assert status == 200 and body["entries"][0]["decision"]["candidate"] == "strong", body
        assert body["entries"][0]["partition"] == entry["partition"]
        assert _http(worker.metrics_port, "key=nobody")[0] == 404
        assert _http(worker.metrics_port, "")[0] == 400

        # forged: control-shaped JSON without the header, and the header with a wrong secret
        forged = control_body("evict", "user-0", None, "forged-1")
        asyncio.run(produce(kafka_bootstrap, topic, [(b"user-0", forged)]))
        asyncio.run(
            produce(
                kafka_bootstrap,
                topic,
                [(b"user-0", forged)],
                headers=[(CONTROL_HEADER, b"guess-" + os.urandom(12).hex().encode())],
            )
        )
        dead = [json.loads(r.value) for r in read(config, "dead_letter", expect=2)]
        assert [x["reason"] for x in dead] == ["unauthorised_control"] * 2
        assert all(SECRET not in json.dumps(x) for x in dead)
        assert _get(cfg, "user-0")[1]["entries"][0]["decision"]["candidate"] == "strong"  # not evicted
        # the CLI with another secret than the workers': refused, said, exit 1
        code, out, err = _cli(cfg, "evict", "--key", "user-0", secret="other-" + os.urandom(12).hex())
        assert code == 1 and "REFUSED: dead letter unauthorised_control" in out, (out, err)

        # an eviction limited to another strategy keeps the decision
        code, out, err = _cli(cfg, "evict", "--key", "user-0", "--strategy", "learned", "--json")
        assert code == 0, err
        kept = json.loads(out)
        assert "kept" in next(iter(kept["confirmed"].values())), kept
        assert _get(cfg, "user-0")[1]["entries"][0]["decision"]["candidate"] == "strong"

        code, out, err = _cli(cfg, "evict", "--key", "user-0", "--strategy", "by-tag", "--json")
        assert code == 0, err
        evicted = json.loads(out)
        assert evicted["partitions"] == [entry["partition"]]
        assert next(iter(evicted["confirmed"].values())).startswith("evicted"), evicted

        # the CLI refuses to send without the secret (usage, exit 2)
        code, _, err = _cli(cfg, "evict", "--key", "user-0", secret=None)
        assert code == 2 and "RS_CONTROL_SECRET" in err

        asyncio.run(produce(kafka_bootstrap, topic, [(b"user-0", _value("r3"))]))
        audits = {
            a["request_id"]: a for a in map(json.loads, (r.value for r in read(config, "audit", expect=5)))
        }
        assert len(audits) == 5  # r1-r3 and the two authorised control records: nothing from the forgeries
        control = audits[evicted["control_id"]]
        assert control["decided_by"] == "control" and control["control"]["applied"] is True
        assert control["control"]["evicted"]["candidate"] == "strong"
        r3 = audits["r3"]
        assert (r3["cache_hit"], r3["chosen"], r3["decided_by"]) == (False, "cheap", "default"), r3
        responses = [json.loads(r.value)["request_id"] for r in read(config, "responses", expect=3)]
        assert sorted(responses) == ["r1", "r2", "r3"]  # a control record is never answered
        after = _get(cfg, "user-0")[1]["entries"][0]
        assert (
            after["decision"] is None
            and after["count"] == 3
            and after["recent_request_ids"] == ["r1", "r2", "r3"]
        )
    finally:
        assert worker.terminate() == 0

    # no worker running: the changelog still answers
    code, got = _get(cfg, "user-0")
    assert code == 0 and got["entries"][0]["count"] == 3
    worker = start_worker(tmp_path, config, name="w2", env=ENV)
    try:
        asyncio.run(produce(kafka_bootstrap, topic, [(b"user-0", _value("r4", ["hard"]))]))
        assert len(read(config, "responses", expect=4)) == 4
        code, got = _get(cfg, "user-0")
        entry = got["entries"][0]
        assert entry["decision"]["candidate"] == "strong" and entry["count"] == 4
        status, body = _http(worker.metrics_port, "key=user-0")
        assert status == 200 and body["worker_id"] == "w2" and body["entries"][0]["count"] == 4
    finally:
        worker.terminate()


def test_scope_value_on_every_partition(kafka_bootstrap, model_servers, prefix, tmp_path):
    """cache.scope field: a tenant's requests arrive on several partitions, each with its own entry;
    `state get --scope-value` finds them all and `state evict --scope-value` clears each one."""
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        strategies=STRATEGIES,
        extra={
            "control": {"secret_env": "RS_CONTROL_SECRET"},
            "cache": {"scope": "field", "scope_field": "tenant"},
        },
    )
    cfg = write_config(tmp_path / "cli.yaml", config)
    setup_topics(config, partitions=3)
    topic = config["topics"]["requests"]

    def value(rid: str, tags: list[str] | None = None) -> bytes:
        return json.dumps(
            {"request_id": rid, "prompt": "hi", "tags": tags or [], "fields": {"tenant": "acme"}}
        ).encode()

    worker = start_worker(tmp_path, config, env=ENV)
    try:
        keys = [f"user-{i}".encode() for i in range(12)]  # spread over the 3 partitions
        asyncio.run(produce(kafka_bootstrap, topic, [(k, value(f"a-{k.decode()}", ["hard"])) for k in keys]))
        assert len(read(config, "audit", expect=12)) == 12
        code, out, err = _cli(cfg, "get", "--scope-value", "acme", "--json")
        got = json.loads(out)
        assert code == 0 and {e["partition"] for e in got["entries"]} == {0, 1, 2}, (got, err)
        assert all(e["decision"]["candidate"] == "strong" for e in got["entries"])
        assert sum(e["count"] for e in got["entries"]) == 12
        code, out, _ = _cli(cfg, "get", "--scope-value", "acme", "--kafka-key", "user-0", "--json")
        assert code == 0 and len(json.loads(out)["entries"]) == 1
        code, _, err = _cli(cfg, "get", "--key", "acme", "--scope-value", "acme")
        assert code == 2  # one of the two
        status, body = _http(worker.metrics_port, "scope_value=acme")
        assert status == 200 and body["partitions_owned_here"] == [0, 1, 2] and len(body["entries"]) == 3

        code, out, err = _cli(cfg, "evict", "--scope-value", "acme", "--json")
        evicted = json.loads(out)
        assert code == 0 and sorted(evicted["partitions"]) == [0, 1, 2], (evicted, err)
        assert all(v.startswith("evicted") for v in evicted["confirmed"].values()), evicted
        asyncio.run(produce(kafka_bootstrap, topic, [(k, value(f"b-{k.decode()}")) for k in keys]))
        audits = [json.loads(r.value) for r in read(config, "audit", expect=27)]
    finally:
        worker.terminate()
    after = [a for a in audits if a["request_id"].startswith("b-")]
    assert len(after) == 12 and all((a["cache_hit"], a["chosen"]) == (False, "cheap") for a in after)
