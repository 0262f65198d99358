"""Batch API mode on the real broker: parked requests, one job, restart resumes polling (issue 6)."""

from __future__ import annotations

import asyncio
import json

import pytest

from router_stream_dev.harness import produce, request_value
from router_stream_dev.model_server import ModelServer

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker, wait_until

pytestmark = pytest.mark.kafka


def test_batch_mode_answers_once_and_restart_resumes_polling(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    bulk = ModelServer(name="bulk", batch_complete_s=6)
    bulk.start_in_thread()
    try:
        candidates = {**{n: s.base_url for n, s in model_servers.items()}, "bulk": bulk.base_url}
        config = make_config(
            bootstrap=kafka_bootstrap,
            prefix=prefix,
            state_dir=tmp_path / "state",
            candidates=candidates,
            default="cheap",
            strategies=[{"type": "rules", "rules": [{"when": '"offline" in tags', "then": "bulk"}]}],
            candidate_extra={
                "bulk": {
                    "mode": "batch",
                    "batch_api": {"max_records": 1000, "max_wait_ms": 500, "poll_interval_ms": 200},
                }
            },
        )
        setup_topics(config, partitions=2)
        worker = start_worker(tmp_path, config, "w1")
        records = [
            (f"k{i % 7}".encode(), request_value(f"b{i}", f"summarise doc {i}", tags=["offline"]))
            for i in range(40)
        ]
        records += [(b"k-online", request_value(f"o{i}", f"quick {i}")) for i in range(10)]
        records += [(b"k0", request_value("b0", "summarise doc 0", tags=["offline"]))]  # a producer retry
        asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], records))
        # the online requests are answered at once; the batch ones wait for their job
        online = read(config, "responses", expect=10, timeout=60, idle=1)
        assert {json.loads(r.value)["request_id"] for r in online} == {f"o{i}" for i in range(10)}
        wait_until(lambda: bulk.stats().get("batches_created", 0) >= 1, 60, what="a batch job")
        jobs_before = bulk.stats()["batches_created"]
        worker.kill()  # mid-job: the job id is committed in the table, the answers are not yet
        worker = start_worker(tmp_path, config, "w1")
        try:
            responses = read(config, "responses", expect=51, timeout=120)
            audits = read(config, "audit", expect=51, timeout=60)
        finally:
            worker.terminate()
        assert bulk.stats()["batches_created"] == jobs_before, (
            "restart resubmitted instead of resuming polling"
        )
        assert bulk.stats()["calls"] == 0, "batch-mode candidate was called online"
    finally:
        bulk.stop()
    expected = {f"b{i}" for i in range(40)} | {f"o{i}" for i in range(10)}
    ids = ids_of(responses)
    assert ids["b0"] == 2  # the original and the retry
    ids["b0"] = 1
    assert_exactly_once(ids, expected, "responses")
    by_id = [json.loads(r.value) for r in responses]
    dup = [r for r in by_id if r["request_id"] == "b0"]
    assert (
        sorted(r.get("duplicate", False) for r in dup) == [False, True]
        and dup[0]["output"] == dup[1]["output"]
    )
    batch_answers = [r for r in by_id if r["request_id"].startswith("b")]
    assert all(
        r["candidate"] == "bulk" and r["output"].startswith("[bulk]") and r["batch"]["mode"] == "batch_api"
        for r in batch_answers
    )
    assert len(audits) == 51
