"""On a real broker: a compliance rule before a learned router wins over the key's sticky decision,
across a worker restart (issue 17's probe: `[rules: "legal" in tags -> strong, learned]`)."""

from __future__ import annotations

import asyncio
import json

import pytest

from router_stream_dev.harness import produce

from .helpers import make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

STRATEGIES = [
    {
        "type": "rules",
        "name": "compliance",
        "cache": {"enabled": False},
        "rules": [{"when": '"legal" in tags', "then": "strong"}],
    },
    # threshold far above any score: the learned router always picks the weak model, so the
    # sticky decision for the key is 'cheap' whatever the prompt
    {"type": "learned", "name": "learned", "weak": "cheap", "strong": "strong", "threshold": 100},
]


def _value(rid: str, prompt: str, tags: list[str] | None = None) -> bytes:
    return json.dumps({"request_id": rid, "prompt": prompt, "tags": tags or []}).encode()


def test_legal_request_goes_to_strong_despite_sticky_learned_decision(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        strategies=STRATEGIES,
        extra={"cache": {"scope": "key", "ttl_s": 3600}},
    )
    setup_topics(config, partitions=2)
    topic = config["topics"]["requests"]
    worker = start_worker(tmp_path, config)
    try:
        asyncio.run(
            produce(kafka_bootstrap, topic, [(b"user-0", _value("r1", "What is the capital of France?"))])
        )
        assert len(read(config, "audit", expect=1)) == 1
    finally:
        assert worker.terminate() == 0
    worker = start_worker(tmp_path, config, name="w2")  # the sticky entry comes back from the changelog
    try:
        asyncio.run(
            produce(
                kafka_bootstrap,
                topic,
                [
                    (b"user-0", _value("r2", "Review this contract clause.", ["legal"])),
                    (b"user-0", _value("r3", "And the capital of Spain?")),
                ],
            )
        )
        audits = {
            a["request_id"]: a for a in map(json.loads, (r.value for r in read(config, "audit", expect=3)))
        }
        responses = {
            r["request_id"]: r
            for r in map(json.loads, (r.value for r in read(config, "responses", expect=3)))
        }
    finally:
        worker.terminate()
    assert (audits["r1"]["chosen"], audits["r1"]["decided_by"], audits["r1"]["cache_hit"]) == (
        "cheap",
        "learned",
        False,
    )
    legal = audits["r2"]
    assert (legal["chosen"], legal["decided_by"], legal["cache_hit"]) == ("strong", "compliance", False), (
        legal
    )
    assert legal["worker_id"] == "w2" and "sticky" not in legal
    assert responses["r2"]["candidate"] == "strong" and responses["r2"]["output"].startswith("[strong]")
    plain = audits["r3"]
    assert (plain["chosen"], plain["decided_by"], plain["cache_hit"]) == ("cheap", "learned", True), plain
    assert plain["sticky"]["strategy"] == "learned" and plain["sticky"]["ran_before"] == ["compliance"]
    assert [v["outcome"] for v in plain["verdicts"]] == ["abstained", "chose"]
