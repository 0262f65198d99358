"""Prompt micro-batching over real HTTP against the loopback model server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from router_stream.config import CandidateConfig, RouterConfig, parse_config
from router_stream.config_candidates import BatchResponseConfig
from router_stream.errors import ConfigError, RetryableModelError
from router_stream.providers.base import ChatCall, Completion
from router_stream.providers.batching import BatchingClient
from router_stream.providers.dispatch_hooks import DispatchObserver
from router_stream.providers.json_path import compile_json_path, json_path_find
from router_stream.providers.micro_batch_format import BatchParseError, parse_batch_answer, render_batch
from router_stream.providers.openai import OpenAIChatClient
from router_stream.providers.resilience import Dispatcher
from router_stream.schemas import Request
from router_stream_dev.model_server import ModelServer

KEY = "sk-batching-secret-17"


@pytest.fixture
async def server(monkeypatch):
    monkeypatch.setenv("RS_BATCH_KEY", KEY)
    async with ModelServer("cheap", provider_model="cheap-v1", api_key=KEY, latency_ms=5) as srv:
        yield srv


@pytest.fixture
async def make_client(server):
    """``make(**batch)`` -> a BatchingClient over a real OpenAIChatClient for ``server``."""
    made: list[BatchingClient] = []

    def make(context_window: int | None = None, **batch: Any) -> BatchingClient:
        cfg = CandidateConfig(
            base_url=server.base_url,
            model="cheap-model",
            api_key_env="RS_BATCH_KEY",
            request_timeout_ms=3000,
            context_window=context_window,
            batch={"size": 5, "timeout_ms": 2000, **batch},
        )
        client = BatchingClient("cheap", cfg, OpenAIChatClient("cheap", cfg), owns_inner=True)
        made.append(client)
        return client

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
async def plain(server):
    """A non-batching client for the same server: what a record's answer alone looks like."""
    cfg = CandidateConfig(base_url=server.base_url, model="cheap-model", api_key_env="RS_BATCH_KEY")
    client = OpenAIChatClient("cheap", cfg)
    yield client
    await client.aclose()


def call(text: str, timeout_s: float = 5.0, **params: Any) -> ChatCall:
    return ChatCall(messages=[{"role": "user", "content": text}], params=params, timeout_s=timeout_s)


def prompts(n: int) -> list[str]:
    return [f"question number {i}: what is {i} squared?" for i in range(n)]


async def ask_all(client: BatchingClient, texts: list[str], **kw: Any) -> list[Any]:
    return await asyncio.gather(*(client.complete(call(t, **kw)) for t in texts), return_exceptions=True)


async def alone(plain: OpenAIChatClient, server: ModelServer, texts: list[str]) -> list[str]:
    """Answers to each text asked alone (server stats are reset afterwards)."""
    answers = [(await plain.complete(call(t))).text for t in texts]
    server.reset_stats()
    return answers


# ---- the happy path ----------------------------------------------------------------------------
async def test_twenty_concurrent_calls_make_one_model_call(make_client, server, plain):
    texts = prompts(20)
    expected = await alone(plain, server, texts)
    client = make_client(size=20, timeout_ms=5000)
    t0 = time.monotonic()
    results = await ask_all(client, texts)
    assert time.monotonic() - t0 < 2.0  # flushed by size, not by the 5 s timer
    stats = server.stats()
    assert stats["calls"] == 1 and stats["batched_calls"] == 1 and stats["batched_records"] == 20
    assert all(isinstance(r, Completion) for r in results)
    assert [r.text for r in results] == expected  # each its own answer, as if asked alone
    assert len({r.batch["id"] for r in results}) == 1
    assert sorted(r.batch["position"] for r in results) == list(range(20))
    assert all(r.batch["size"] == 20 and r.batch["answered"] == "batch" for r in results)
    assert all(r.provider_model == "cheap-v1" and r.status == 200 for r in results)
    # usage is the batch's, split evenly and summing to the whole
    body = stats["last_body"]
    chars = sum(len(m["content"]) for m in body["messages"])
    assert sum(r.usage.prompt_tokens for r in results) == chars // 4 + 4 * len(body["messages"])
    prompt_shares = {r.usage.prompt_tokens for r in results}
    assert max(prompt_shares) - min(prompt_shares) <= 1
    assert all(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens for r in results)
    assert stats["auth_present"] == 1 and body["model"] == "cheap-model"


@pytest.mark.parametrize(
    "response",
    [
        {"format": "json"},
        {"format": "json", "path": "$.data['answers'][*]", "index_field": "id", "value_field": "text"},
        {"format": "xml"},
        {"format": "xml", "path": "/answers/answer", "index_field": "@n", "value_field": "."},
        {"format": "xml", "path": ".//row", "index_field": "@id", "value_field": "@value"},
        {"format": "delimited"},
        {"format": "delimited", "delimiter": "\n--\n", "field_delimiter": "::"},
    ],
    ids=[
        "json",
        "json-custom",
        "xml",
        "xml-absolute-attr",
        "xml-descendant-attrs",
        "delimited",
        "delimited-custom",
    ],
)
async def test_each_format(make_client, server, plain, response):
    texts = [*prompts(6), 'a <tagged> & "quoted" question | with pipes']
    expected = await alone(plain, server, texts)
    client = make_client(size=7, response=response)
    results = await ask_all(client, texts)
    assert [getattr(r, "text", r) for r in results] == expected
    assert server.stats()["calls"] == 1
    spec = server.stats()["last_body"]["messages"][0]["content"]
    assert f"Answer format: {response['format']}" in spec


async def test_timeout_flushes_a_partial_batch(make_client, server):
    client = make_client(size=10, timeout_ms=150)
    t0 = time.monotonic()
    results = await ask_all(client, prompts(3))
    elapsed = time.monotonic() - t0
    assert 0.14 <= elapsed < 1.5
    assert all(isinstance(r, Completion) and r.batch["size"] == 3 for r in results)
    assert server.stats()["calls"] == 1 and server.stats()["batched_records"] == 3


async def test_size_then_timer_makes_two_batches(make_client, server):
    client = make_client(size=4, timeout_ms=100)
    results = await ask_all(client, prompts(6))
    sizes = sorted(r.batch["size"] for r in results)
    assert sizes == [2, 2, 4, 4, 4, 4]
    assert server.stats()["calls"] == 2


# ---- partial failure ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["batch_drop", "batch_bad_index"])
async def test_missing_record_is_retried_alone(make_client, server, plain, fault):
    texts = prompts(5)
    expected = await alone(plain, server, texts)
    server.set_faults(batch_fault_position=2)
    server.script(fault)
    client = make_client(size=5)
    results = await ask_all(client, texts)
    assert [getattr(r, "text", r) for r in results] == expected
    stats = server.stats()
    assert stats["calls"] == 2 and stats["batched_calls"] == 1  # the batch, then record 2 alone
    assert results[2].batch["answered"] == "alone" and results[2].batch["reason"] == "missing"
    assert results[2].batch["position"] == 2 and results[2].batch["id"] == results[0].batch["id"]
    assert all(r.batch["answered"] == "batch" for i, r in enumerate(results) if i != 2)
    # the record alone pays for its own call and its share of the batch
    assert results[2].usage.total_tokens > results[0].usage.total_tokens


async def test_missing_record_errors_when_configured(make_client, server):
    server.script("batch_drop")  # the last entry
    client = make_client(size=4, on_missing="error")
    results = await ask_all(client, prompts(4))
    assert all(isinstance(r, Completion) for r in results[:3])
    err = results[3]
    assert isinstance(err, RetryableModelError) and err.kind == "batch_missing"
    assert err.batch["position"] == 3 and err.batch["id"] == results[0].batch["id"]
    assert server.stats()["calls"] == 1


async def test_unparseable_answer_falls_back_to_individual_calls(make_client, server, plain):
    texts = prompts(4)
    expected = await alone(plain, server, texts)
    server.script("batch_garbage")
    client = make_client(size=4)
    results = await ask_all(client, texts)
    assert [getattr(r, "text", r) for r in results] == expected
    assert server.stats()["calls"] == 5  # one batch, then four alone
    assert all(r.batch["answered"] == "alone" and r.batch["reason"] == "parse_error" for r in results)
    assert {r.batch["position"] for r in results} == {0, 1, 2, 3}


@pytest.mark.parametrize("fmt", ["json", "xml", "delimited"])
async def test_unparseable_answer_errors_when_configured(make_client, server, fmt):
    server.script("batch_garbage")
    client = make_client(size=3, on_parse_error="error", response={"format": fmt})
    results = await ask_all(client, prompts(3))
    assert all(isinstance(r, RetryableModelError) and r.kind == "batch_parse_error" for r in results)
    assert [r.batch["position"] for r in results] == [0, 1, 2]
    assert server.stats()["calls"] == 1


async def test_failed_batch_call_is_retried(make_client, server):
    server.set_faults(retry_after=None)
    server.script("503")
    client = make_client(size=3, max_retries=1)
    results = await ask_all(client, prompts(3))
    assert all(isinstance(r, Completion) for r in results)
    assert server.stats()["calls"] == 2


async def test_failed_batch_gives_every_record_the_error(make_client, server):
    server.set_faults(retry_after=None)
    server.script("503", "503")
    client = make_client(size=3, max_retries=1)
    results = await ask_all(client, prompts(3))
    assert all(isinstance(r, RetryableModelError) and r.kind == "server_error" for r in results)
    assert len({r.batch["id"] for r in results}) == 1
    assert KEY not in "".join(str(r) for r in results)


async def test_batch_request_timeout(make_client, server):
    server.set_faults(faults={"timeout": 1.0}, hang_s=5)
    client = make_client(size=2, max_retries=0, request_timeout_ms=200)  # the candidate's is 3000
    t0 = time.monotonic()
    results = await ask_all(client, prompts(2))
    assert time.monotonic() - t0 < 1.5
    assert all(isinstance(r, RetryableModelError) and r.kind == "timeout" for r in results)


async def test_caller_timeout_while_queued_withdraws_the_record(make_client, server):
    client = make_client(size=10, timeout_ms=5000)
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call("lonely", timeout_s=0.2))
    assert info.value.kind == "timeout"
    assert not client._queues and server.stats()["calls"] == 0


# ---- what is (not) batched together ------------------------------------------------------------
async def test_calls_with_their_own_system_prompt_go_straight_through(make_client, server):
    client = make_client(size=5)
    result = await client.complete(
        ChatCall(
            messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}],
            timeout_s=5,
        )
    )
    assert result.batch is None and result.text == "[cheap] answer to: hi"
    assert server.stats()["calls"] == 1 and server.stats()["batched_calls"] == 0


async def test_different_params_make_different_batches(make_client, server):
    client = make_client(size=2)
    results = await asyncio.gather(
        client.complete(call("a", temperature=0.1)),
        client.complete(call("b", temperature=0.9)),
        client.complete(call("c", temperature=0.1)),
        client.complete(call("d", temperature=0.9)),
    )
    assert (
        results[0].batch["id"] == results[2].batch["id"] != results[1].batch["id"] == results[3].batch["id"]
    )
    assert server.stats()["calls"] == 2


async def test_token_caps_scale_with_the_batch(make_client, server):
    client = make_client(size=4)
    await asyncio.gather(*(client.complete(call(t, max_tokens=30)) for t in prompts(4)))
    assert server.stats()["last_body"]["max_tokens"] == 120


async def test_context_window_splits_batches(make_client, server):
    # each record is ~33 tokens, the fixed instructions ~145: two records fit in 230, three do not
    client = make_client(size=10, timeout_ms=100, context_window=230)
    results = await ask_all(client, ["x" * 100 for _ in range(4)])
    assert all(isinstance(r, Completion) for r in results)
    assert [r.batch["size"] for r in results] == [2, 2, 2, 2] and server.stats()["calls"] == 2


async def test_aclose_fails_waiting_callers(make_client, server):
    client = make_client(size=10, timeout_ms=5000)
    waiting = asyncio.ensure_future(client.complete(call("never flushed")))
    await asyncio.sleep(0.05)
    await client.aclose()
    with pytest.raises(RetryableModelError):
        await waiting
    with pytest.raises(RetryableModelError):
        await client.complete(call("after close"))


async def test_aclose_fails_callers_of_a_running_batch(make_client, server):
    server.set_faults(latency_ms=3000)
    client = make_client(size=2)
    waiting = asyncio.gather(*(client.complete(call(t)) for t in prompts(2)), return_exceptions=True)
    await asyncio.sleep(0.2)  # the batch is on the wire
    t0 = time.monotonic()
    await client.aclose()
    results = await waiting
    assert time.monotonic() - t0 < 1.0
    assert all(isinstance(r, RetryableModelError) and "closed" in str(r) for r in results)


# ---- through the dispatcher and the handler ----------------------------------------------------
def router_config(server: ModelServer, max_retries: int = 2, **batch: Any) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "candidates": {
                "cheap": {
                    "base_url": server.base_url,
                    "model": "cheap-model",
                    "api_key_env": "RS_BATCH_KEY",
                    "request_timeout_ms": 3000,
                    "max_retries": max_retries,
                    "batch": {"size": 20, "timeout_ms": 100, **batch},
                }
            },
            "default": "cheap",
        }
    )


async def test_dispatcher_wraps_a_batching_candidate(server):
    d = Dispatcher(router_config(server), backoff_initial_s=0.01, backoff_max_s=0.05)
    try:
        results = await asyncio.gather(
            *(
                d.call(Request(request_id=f"r{i}", prompt=t), "cheap", time.monotonic() + 10)
                for i, t in enumerate(prompts(20))
            )
        )
    finally:
        await d.aclose()
    assert all(r.ok for r in results)
    assert server.stats()["calls"] == 1
    assert all(r.batch == r.completion.batch and r.batch["size"] == 20 for r in results)
    assert all(r.cost_usd == 0.0 and r.attempts[0].outcome == "ok" for r in results)


async def test_dispatcher_retries_a_missing_record_in_a_new_batch(server):
    server.script("batch_drop")
    d = Dispatcher(
        router_config(server, size=4, on_missing="error"), backoff_initial_s=0.01, backoff_max_s=0.02
    )
    try:
        results = await asyncio.gather(
            *(
                d.call(Request(request_id=f"r{i}", prompt=t), "cheap", time.monotonic() + 10)
                for i, t in enumerate(prompts(4))
            )
        )
    finally:
        await d.aclose()
    assert all(r.ok for r in results)
    last = results[3]
    assert [(a.outcome, a.error_kind) for a in last.attempts] == [("error", "batch_missing"), ("ok", None)]
    assert last.batch["size"] == 1 and last.batch["id"] != results[0].batch["id"]


async def test_dispatcher_reports_the_batch_of_a_failure(server):
    server.set_faults(faults={"503": 1.0}, retry_after=None)
    d = Dispatcher(router_config(server, max_retries=0, size=2), backoff_initial_s=0.01, backoff_max_s=0.02)
    try:
        results = await asyncio.gather(
            *(
                d.call(Request(request_id=f"r{i}", prompt=t), "cheap", time.monotonic() + 10)
                for i, t in enumerate(prompts(2))
            )
        )
    finally:
        await d.aclose()
    assert all(not r.ok and r.error_kind == "server_error" for r in results)
    assert sorted(r.batch["position"] for r in results) == [0, 1]


async def test_a_batched_call_books_one_request_of_the_rate_limit(server):
    """requests_per_minute counts HTTP calls: 10 records in one batch take one request of budget."""
    config = router_config(server, size=10, timeout_ms=2000)
    config.candidates["cheap"].rate_limit.requests_per_minute = 1
    config.candidates["cheap"].rate_limit.max_wait_ms = 50
    waits: list[float] = []

    class Observer(DispatchObserver):
        def on_rate_limit_wait(self, candidate, seconds):
            waits.append(seconds)

    d = Dispatcher(config, observer=Observer(), backoff_initial_s=0.01, backoff_max_s=0.02)
    try:
        first = await asyncio.gather(
            *(
                d.call(Request(request_id=f"a{i}", prompt=t), "cheap", time.monotonic() + 10)
                for i, t in enumerate(prompts(10))
            )
        )
        assert all(r.ok for r in first), [r.error for r in first]
        assert server.stats()["calls"] == 1
        # the minute's one request is spent: the next batch cannot book within max_wait_ms
        second = await asyncio.gather(
            *(
                d.call(Request(request_id=f"b{i}", prompt=t), "cheap", time.monotonic() + 10)
                for i, t in enumerate(prompts(3))
            )
        )
        assert all(not r.ok and r.error_kind == "rate_limited" for r in second)
        assert "requests_per_minute=1" in (second[0].error or "")
        assert server.stats()["calls"] == 1
        assert d.breaker_states()["cheap"] == "closed"  # no verdict on the endpoint
        assert waits == []
    finally:
        await d.aclose()


async def test_a_batched_call_waits_for_request_budget_within_max_wait(server):
    from router_stream.providers.ratelimit import RateLimiter

    now = [0.0]
    cfg = CandidateConfig(
        base_url=server.base_url,
        model="cheap-model",
        api_key_env="RS_BATCH_KEY",
        request_timeout_ms=3000,
        batch={"size": 3, "timeout_ms": 2000},
        rate_limit={"requests_per_minute": 60, "max_wait_ms": 1000},
    )
    limiter = RateLimiter(cfg.rate_limit, clock=lambda: now[0])
    limiter.requests.take(59.5)  # half a request left: the next whole one is 0.5 s away
    slept: list[float] = []
    waits: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    client = BatchingClient(
        "cheap",
        cfg,
        OpenAIChatClient("cheap", cfg),
        owns_inner=True,
        sleep=sleep,
        limiter=limiter,
        on_rate_limit_wait=waits.append,
    )
    try:
        out = await ask_all(client, prompts(3))
    finally:
        await client.aclose()
    assert all(isinstance(o, Completion) for o in out), out
    assert server.stats()["calls"] == 1
    assert slept == waits == [pytest.approx(0.5)]


async def test_handler_records_the_batch_in_response_and_audit(server):
    from router_stream.processing.handler import Handler
    from router_stream.processing.partition import Source, StateView
    from router_stream.runtime import build_pipeline

    config = router_config(server)
    d = Dispatcher(config)
    handler = Handler(config, build_pipeline(config), d, "w1")
    view = StateView({})  # type: ignore[arg-type]
    sources = [
        Source(
            "requests",
            0,
            i,
            f"k{i}".encode(),
            Request(request_id=f"r{i}", prompt=t).model_dump_json().encode(),
        )
        for i, t in enumerate(prompts(20))
    ]
    try:
        outcomes = await asyncio.gather(*(handler.handle(s, view) for s in sources))
    finally:
        await d.aclose()
    assert server.stats()["calls"] == 1
    for o in outcomes:
        assert o.response.error is None and o.response.batch["size"] == 20
        assert o.audit.batch == o.response.batch
    assert sorted(o.response.batch["position"] for o in outcomes) == list(range(20))


# ---- parsing and rendering, no HTTP ------------------------------------------------------------
def test_json_path_subset():
    doc = {"a": {"b": [{"x": 1}, {"x": 2}]}, "c": [{"x": 3}], "weird key": 4}
    assert json_path_find(doc, compile_json_path("$.a.b[*].x")) == [1, 2]
    assert json_path_find(doc, compile_json_path("$..x")) == [1, 2, 3]
    assert json_path_find(doc, compile_json_path("$['weird key']")) == [4]
    assert json_path_find(doc, compile_json_path("$.a.b[-1]")) == [{"x": 2}]
    assert json_path_find(doc, compile_json_path("$.*")) == [doc["a"], doc["c"], 4]
    assert json_path_find(doc, compile_json_path("$")) == [doc]
    for bad in ("a.b", "$.a[?(@.x)]", "$.a.b[1:2]"):
        with pytest.raises(ValueError):
            compile_json_path(bad)


def test_parse_is_lenient_about_wrapping_but_strict_about_indexes():
    resp = BatchResponseConfig()
    fenced = '```json\n{"results": [{"index": 1, "value": "b"}, {"index": "0", "value": "a"}]}\n```'
    assert parse_batch_answer(fenced, resp, 2).answers == {0: "a", 1: "b"}
    prose = 'Sure! {"results": [{"index": 0, "value": {"n": 1}}]} Hope that helps.'
    assert parse_batch_answer(prose, resp, 1).answers == {0: '{"n": 1}'}
    dup = (
        '{"results": [{"index": 0, "value": "a"}, {"index": 0, "value": "b"}, {"index": 1, "value": "c"},'
        ' {"index": 7, "value": "d"}, {"index": true, "value": "e"}, {"value": "f"}]}'
    )
    parsed = parse_batch_answer(dup, resp, 2)
    assert parsed.answers == {1: "c"} and parsed.duplicates == [0] and parsed.bad == 3
    bare = BatchResponseConfig(path="$")
    assert parse_batch_answer('[{"index": 0, "value": "a"}]', bare, 1).answers == {0: "a"}
    for text in ("no json here", '{"other": []}', "[1, 2"):
        with pytest.raises(BatchParseError):
            parse_batch_answer(text, resp, 2)


def test_xml_refuses_entities():
    resp = BatchResponseConfig(format="xml")
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        "<results><item><index>0</index><value>&lol2;</value></item></results>"
    )
    with pytest.raises(BatchParseError, match="DTD"):
        parse_batch_answer(bomb, resp, 1)
    with pytest.raises(BatchParseError):
        parse_batch_answer("<results><item><index>0</index><value>&xxe;</value></item></results>", resp, 1)
    ok = "Here: <results><item><index>0</index><value>a &amp; b</value></item></results>"
    assert parse_batch_answer(ok, resp, 1).answers == {0: "a & b"}


def test_delimited_skips_chatter_lines():
    resp = BatchResponseConfig(format="delimited")
    text = "Here are your answers:\n0| first\n\n1|second | with a pipe\nthanks"
    assert parse_batch_answer(text, resp, 2).answers == {0: "first", 1: "second | with a pipe"}
    with pytest.raises(BatchParseError):
        parse_batch_answer("nothing useful", resp, 2)


def test_render_does_not_rescan_inserted_content():
    messages = render_batch(
        "{count} records. {format_instructions}",
        "#{index}: {content}",
        BatchResponseConfig(),
        ["say {index} and {content}", "two"],
    )
    assert messages[0]["content"].startswith("2 records. Reply with JSON")
    assert messages[1]["content"] == "#0: say {index} and {content}\n\n#1: two"


def test_yaml_config_and_validation_errors():
    base = {"candidates": {"c": {"base_url": "http://127.0.0.1:1", "model": "m"}}, "default": "c"}
    cfg = parse_config(base, environ={})
    assert cfg.candidates["c"].batch.size == 1  # off by default
    on = {
        **base,
        "candidates": {
            "c": {
                "base_url": "http://127.0.0.1:1",
                "model": "m",
                "batch": {
                    "size": 8,
                    "timeout_ms": 20,
                    "on_parse_error": "error",
                    "max_retries": 0,
                    "request_timeout_ms": 9000,
                    "response": {"format": "xml", "path": "/out/r", "index_field": "@i", "value_field": "."},
                },
            }
        },
    }
    batch = parse_config(on, environ={}).candidates["c"].batch
    assert batch.size == 8 and batch.response.format == "xml" and batch.request_timeout_ms == 9000
    env = parse_config(base, environ={"ROUTER_STREAM__CANDIDATES__C__BATCH__SIZE": "4"})
    assert env.candidates["c"].batch.size == 4

    def fails(batch: dict[str, Any], match: str) -> None:
        bad = {**base, "candidates": {"c": {"base_url": "http://127.0.0.1:1", "model": "m", "batch": batch}}}
        with pytest.raises(ConfigError, match=match):
            parse_config(bad, environ={})

    fails({"size": 0}, r"candidates\.c\.batch\.size")
    fails({"prompt_template": "{content} only"}, r"candidates\.c\.batch\.prompt_template: .*\{index\}")
    fails({"response": {"path": "results"}}, r"candidates\.c\.batch\.response: .*'\$'")
    fails({"response": {"format": "yaml"}}, r"candidates\.c\.batch\.response\.format")
    fails({"response": {"format": "delimited", "delimiter": "|", "field_delimiter": "|"}}, "field_delimiter")
    fails({"sise": 3}, r"candidates\.c\.batch\.sise")
    cand = CandidateConfig(
        base_url="http://127.0.0.1:1", model="m", batch={"size": 2, "response": {"path": "$.a[1:2]"}}
    )
    with pytest.raises(ConfigError, match=r"candidates\.x\.batch\.response\.path"):
        BatchingClient("x", cand, object())  # type: ignore[arg-type]
