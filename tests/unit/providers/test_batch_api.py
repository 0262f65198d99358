"""BatchAPIClient against the loopback server's /v1/files + /v1/batches over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from router_stream.config import CandidateConfig, parse_config
from router_stream.config_candidates import BatchAPIConfig
from router_stream.errors import ConfigError, FatalModelError, ModelError, RetryableModelError
from router_stream.providers.base import ChatCall, Completion
from router_stream.providers.batch_api import BatchAPIClient, BatchResults, BatchStatus
from router_stream.providers.pricing import cost_usd
from router_stream.schemas import Usage
from router_stream_dev.model_server import ModelServer

KEY = "sk-test-DO-NOT-LEAK-b47c1e"
FAST = 0.2  # seconds until a loopback job completes


def items(n: int, prefix: str = "r") -> list[tuple[str, ChatCall]]:
    return [
        (
            f"{prefix}{i}",
            ChatCall(
                [{"role": "user", "content": f"question number {i}"}],
                {"temperature": 0.1, "stream": True, "model": "nope"},
            ),
        )
        for i in range(n)
    ]


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("RS_BATCH_KEY", KEY)
    return "RS_BATCH_KEY"


@pytest.fixture
async def server():
    async with ModelServer("bulk", api_key=KEY, batch_complete_s=FAST) as srv:
        yield srv


def make_client(base_url: str, key_env: str | None, **batch_api) -> BatchAPIClient:
    cfg = CandidateConfig(
        base_url=base_url,
        model="bulk-model",
        api_key_env=key_env,
        mode="batch",
        request_timeout_ms=2000,
        price_input_per_1k=1.0,
        price_output_per_1k=2.0,
        batch_api=batch_api,
    )
    return BatchAPIClient("bulk", cfg)


@pytest.fixture
async def client(server, key_env):
    c = make_client(server.base_url, key_env)
    yield c
    await c.aclose()


async def wait_done(
    client: BatchAPIClient, job_id: str, timeout: float = 3.0
) -> tuple[BatchStatus, list[str]]:
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        st = await client.status(job_id)
        if not seen or seen[-1] != st.state:
            seen.append(st.state)
        if st.done:
            return st, seen
        assert asyncio.get_running_loop().time() < deadline, f"job stuck in {st.state}"
        await asyncio.sleep(0.02)


def assert_no_key(errors) -> None:
    for e in errors:
        assert KEY not in str(e) and KEY not in repr(e) and KEY not in repr(getattr(e, "args", ""))


# ---- the happy path ------------------------------------------------------------------------
async def test_submit_poll_results_each_custom_id_gets_its_own_answer(server, client):
    job_id = await client.submit(items(12), metadata={"partition": "3"})
    st, seen = await wait_done(client, job_id)
    assert st.state == "completed" and seen[0] == "validating" and "in_progress" in seen
    assert st.counts.total == 12 and st.counts.completed == 12 and st.counts.failed == 0
    assert st.output_file_id and st.error_file_id is None and st.metadata == {"partition": "3"}

    res = await client.results(st, expected=[f"r{i}" for i in range(12)])
    assert isinstance(res, BatchResults) and len(res) == 12 and res.skipped == 0 and not res.errors
    for i in range(12):
        c = res[f"r{i}"]
        assert isinstance(c, Completion)
        assert c.text == f"[bulk] answer to: question number {i}"
        assert c.provider_model == "bulk-model" and c.status == 200
        assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens > 0

    # the JSONL the server got: our model, the messages, params minus the reserved ones
    stats = server.stats()["batch_api"]
    assert stats["files_uploaded"] == 1 and stats["jobs_created"] == 1 and stats["lines_answered"] == 12
    assert stats["jobs_by_state"] == {"completed": 1} and stats["files_created"] == 1
    assert stats["auth_present"] == stats["requests"] and stats["auth_missing"] == 0
    first = json.loads(server.batch_api.file_content(st.input_file_id).splitlines()[0])
    assert first == {
        "custom_id": "r0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "temperature": 0.1,
            "model": "bulk-model",
            "messages": [{"role": "user", "content": "question number 0"}],
        },
    }


async def test_results_without_expected_reads_the_input_file_and_a_restarted_client_resumes(
    server, client, key_env
):
    job_id = await client.submit(items(5))
    await client.aclose()  # "restart": a fresh client knows only the job id
    fresh = make_client(server.base_url, key_env)
    try:
        _st, _ = await wait_done(fresh, job_id)
        res = await fresh.results(job_id)  # status fetched again, custom_ids from the input file
        assert sorted(res) == [f"r{i}" for i in range(5)]
        assert all(isinstance(v, Completion) for v in res.values())
        assert res["r3"].text.endswith("question number 3")
    finally:
        await fresh.aclose()
    assert server.stats()["batch_api"]["jobs_created"] == 1  # nothing was submitted again


async def test_results_of_an_unfinished_job_raise_batch_pending(server, client):
    server.batch_api.set(complete_s=30)
    job_id = await client.submit(items(2))
    with pytest.raises(RetryableModelError) as ei:
        await client.results(job_id, expected=["r0", "r1"])
    assert ei.value.kind == "batch_pending"


# ---- whole-job failures --------------------------------------------------------------------
async def test_failed_job_gives_every_record_a_batch_failed_error(server, client):
    server.batch_api.set(outcome="failed")
    job_id = await client.submit(items(3))
    st, _ = await wait_done(client, job_id)
    assert st.state == "failed" and st.error_codes == ("invalid_request",)
    assert st.output_file_id is None and st.error_file_id is None
    res = await client.results(st, expected=["r0", "r1", "r2"])
    assert set(res) == {"r0", "r1", "r2"}
    assert all(isinstance(e, FatalModelError) and e.kind == "batch_failed" for e in res.values())


async def test_failed_for_token_limit_is_retryable(server, client):
    job_id = await client.submit(items(2))
    server.batch_api.fail_job(job_id, code="token_limit_exceeded")
    st = await client.status(job_id)
    assert st.state == "failed"
    res = await client.results(st, expected=["r0", "r1"])
    assert all(isinstance(e, RetryableModelError) and e.kind == "batch_failed" for e in res.values())


async def test_a_job_for_another_endpoint_is_refused(server, client):
    c = make_client(server.base_url, client.cfg.api_key_env, endpoint="/v1/embeddings")
    try:
        with pytest.raises(FatalModelError) as ei:  # the loopback server runs chat batches only
            await c.submit(items(1))
        assert ei.value.kind == "client_error" and ei.value.status == 400
    finally:
        await c.aclose()


async def test_invalid_input_lines_fail_the_job_at_validation(server, client):
    # validating lasts 10 % of complete_s: 200 ms here, so a busy machine's first poll still sees it
    server.batch_api.set(complete_s=2)
    good = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    jsonl = "\n".join([json.dumps(good), "{broken", json.dumps(good)]).encode()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
        f = (
            await http.post(
                "/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", jsonl, "application/jsonl")}
            )
        ).json()
        job = (
            await http.post(
                "/batches",
                json={
                    "input_file_id": f["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            )
        ).json()
    st, seen = await wait_done(client, job["id"])
    assert seen == ["validating", "failed"]
    assert st.error_codes == ("invalid_json_line", "duplicate_custom_id")
    res = await client.results(st)  # custom_ids from the input file: only the readable one
    assert set(res) == {"a"} and res["a"].kind == "batch_failed" and not res["a"].retryable


async def test_expired_job_keeps_partial_answers_and_marks_the_rest(server, client):
    server.batch_api.set(partial_fraction=0.5)
    job_id = await client.submit(items(6))
    server.batch_api.expire_job(job_id)
    st = await client.status(job_id)
    assert st.state == "expired" and st.counts.completed == 3 and st.counts.failed == 3
    res = await client.results(st, expected=[f"r{i}" for i in range(6)])
    assert [isinstance(res[f"r{i}"], Completion) for i in range(6)] == [True] * 3 + [False] * 3
    for i in range(3, 6):
        assert isinstance(res[f"r{i}"], RetryableModelError) and res[f"r{i}"].kind == "batch_expired"


async def test_cancel_passes_through_cancelling(server, client):
    server.batch_api.set(complete_s=30)
    job_id = await client.submit(items(4))
    st = await client.cancel(job_id)
    assert st.state == "cancelling"
    st, _ = await wait_done(client, job_id)
    assert st.state == "cancelled"
    res = await client.results(st, expected=[f"r{i}" for i in range(4)])
    assert all(isinstance(e, RetryableModelError) and e.kind == "batch_cancelled" for e in res.values())
    with pytest.raises(FatalModelError) as ei:  # a finished job cannot be cancelled
        await client.cancel(job_id)
    assert ei.value.status == 400 and ei.value.kind == "client_error"


# ---- per-line trouble ----------------------------------------------------------------------
async def test_missing_lines_line_errors_and_garbage(server, client):
    server.batch_api.set(
        drop_custom_ids=["r1"],
        garbage_lines=2,
        line_errors={"r2": 500, "r3": 400, "r4": "rate_limit_exceeded", "r5": "weird_code"},
    )
    job_id = await client.submit(items(7))
    st, _ = await wait_done(client, job_id)
    assert st.state == "completed" and st.error_file_id
    expected = [f"r{i}" for i in range(7)] + ["never-sent"]
    res = await client.results(st, expected=expected)
    assert set(res) == set(expected)
    assert res.skipped == 2 and client.skipped_lines_total == 2
    assert isinstance(res["r0"], Completion) and isinstance(res["r6"], Completion)
    kinds = {cid: (type(e).__name__, e.kind) for cid, e in res.errors.items()}
    assert kinds == {
        "r1": ("RetryableModelError", "missing"),
        "r2": ("RetryableModelError", "server_error"),
        "r3": ("FatalModelError", "client_error"),
        "r4": ("RetryableModelError", "throttled"),
        "r5": ("FatalModelError", "line_error"),
        "never-sent": ("RetryableModelError", "missing"),
    }
    assert res["r2"].status == 500 and res["r3"].status == 400
    assert set(res.completions) == {"r0", "r6"}
    # a line for a custom_id nobody asked about is counted, not returned
    res2 = await client.results(st, expected=["r0"])
    assert set(res2) == {"r0"} and res2.unexpected == 5  # r6's answer and the lines of r2..r5
    stats = server.stats()["batch_api"]
    assert stats["lines_dropped"] == 1 and stats["lines_failed"] == 4 and stats["lines_answered"] == 2


async def test_malformed_result_line_is_a_retryable_error_for_that_record(server, client):
    job_id = await client.submit(items(2))
    st, _ = await wait_done(client, job_id)
    f = server.batch_api._files[st.output_file_id]  # spoil r0's answer: no choices
    lines = [json.loads(x) for x in f.data.splitlines()]
    del lines[0]["response"]["body"]["choices"]
    f.data = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
    res = await client.results(st, expected=["r0", "r1"])
    assert isinstance(res["r0"], RetryableModelError) and res["r0"].kind == "malformed"
    assert isinstance(res["r1"], Completion)


# ---- HTTP failures, keys -------------------------------------------------------------------
async def test_api_key_is_sent_and_never_in_errors(server, client, monkeypatch):
    job_id = await client.submit(items(1))
    assert server.stats()["batch_api"]["auth_missing"] == 0
    monkeypatch.setenv("RS_BATCH_KEY", "sk-wrong-" + KEY)
    errors: list[ModelError] = []
    for op in (client.submit(items(1)), client.status(job_id), client.results(job_id, expected=["r0"])):
        with pytest.raises(FatalModelError) as ei:
            await op
        assert ei.value.kind == "auth" and ei.value.status == 401
        errors.append(ei.value)
    assert_no_key(errors)
    assert KEY not in repr(client)

    monkeypatch.setenv("RS_BATCH_KEY", KEY)
    server.batch_api.set(line_errors={"r0": 401})
    job2 = await client.submit(items(1))
    st, _ = await wait_done(client, job2)
    res = await client.results(st, expected=["r0"])
    assert_no_key(res.values())


async def test_http_faults_map_to_the_error_tree(server, client):
    server.batch_api.fail_next(503)
    with pytest.raises(RetryableModelError) as ei:
        await client.submit(items(1))
    assert ei.value.kind == "server_error" and ei.value.retry_after == 1.0
    server.batch_api.fail_next(429)
    with pytest.raises(RetryableModelError) as ei:
        await client.status("batch_nope")
    assert ei.value.kind == "throttled"
    with pytest.raises(FatalModelError) as ei:
        await client.status("batch_nope")
    assert ei.value.status == 404

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = make_client(f"http://127.0.0.1:{port}/v1", None)
    try:
        with pytest.raises(RetryableModelError) as ei:
            await dead.status("batch_x")
        assert ei.value.kind == "connection"
    finally:
        await dead.aclose()


async def test_submit_rejects_bad_input(server, key_env):
    c = make_client(server.base_url, key_env, max_records=3)
    try:
        with pytest.raises(ValueError, match="at least one"):
            await c.submit([])
        with pytest.raises(ValueError, match="max_records"):
            await c.submit(items(4))
        with pytest.raises(ValueError, match="duplicate"):
            await c.submit(items(1) + items(1))
        with pytest.raises(ValueError, match="custom_id"):
            await c.submit([("", ChatCall([{"role": "user", "content": "x"}]))])
    finally:
        await c.aclose()
    assert server.stats()["batch_api"]["requests"] == 0


# ---- config and pricing --------------------------------------------------------------------
def test_config_defaults_and_validation():
    cfg = CandidateConfig(base_url="http://x/v1", model="m")
    assert cfg.mode == "online"
    assert cfg.batch_api == BatchAPIConfig(
        max_records=1000, max_wait_ms=5000, poll_interval_ms=2000, discount=0.5, completion_window="24h"
    )
    assert cfg.batch.size == 1  # prompt micro-batching is a different thing, untouched
    base = {
        "candidates": {
            "bulk": {
                "base_url": "http://x/v1",
                "model": "m",
                "mode": "batch",
                "batch_api": {"max_records": 10},
            }
        },
        "default": "bulk",
    }
    rc = parse_config(base, environ={"ROUTER_STREAM__CANDIDATES__BULK__BATCH_API__DISCOUNT": "0.4"})
    assert rc.candidates["bulk"].mode == "batch" and rc.candidates["bulk"].batch_api.max_records == 10
    assert rc.candidates["bulk"].batch_api.discount == 0.4
    for bad, where in (
        ({"mode": "bulk"}, "candidates.bulk.mode"),
        ({"batch_api": {"discount": 1.5}}, "candidates.bulk.batch_api.discount"),
        ({"batch_api": {"max_records": 0}}, "candidates.bulk.batch_api.max_records"),
        ({"batch_api": {"nope": 1}}, "candidates.bulk.batch_api.nope"),
    ):
        doc = json.loads(json.dumps(base))
        doc["candidates"]["bulk"].update(bad)
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            parse_config(doc, environ={})


async def test_batch_cost_applies_the_discount():
    cfg = CandidateConfig(
        base_url="http://x/v1",
        model="m",
        price_input_per_1k=1.0,
        price_output_per_1k=2.0,
        batch_api={"discount": 0.5},
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    assert cost_usd(cfg, 1000, 500, discount=0.5) == pytest.approx(1.0)  # (1.0 + 1.0) * 0.5
    c = BatchAPIClient("m", cfg)
    assert c.cost_usd(usage) == pytest.approx(1.0)
    await c.aclose()
