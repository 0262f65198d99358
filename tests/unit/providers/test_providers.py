"""OpenAIChatClient against the loopback model server over real HTTP."""

from __future__ import annotations

import email.utils
import logging
import socket
import time

import pytest

from router_stream.config import CandidateConfig
from router_stream.errors import FatalModelError, ModelError, RetryableModelError
from router_stream.providers.base import ChatCall, Completion, ModelClient, estimate_prompt_tokens
from router_stream.providers.dialect import parse_retry_after
from router_stream.providers.openai import OpenAIChatClient
from router_stream_dev.model_server import ModelServer

KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in one line"}]


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("RS_TEST_KEY", KEY)
    return "RS_TEST_KEY"


@pytest.fixture
async def server():
    async with ModelServer("cheap", provider_model="cheap-v1", api_key=KEY, retry_after=1) as srv:
        yield srv


@pytest.fixture
async def client(server, key_env):
    cfg = CandidateConfig(
        base_url=server.base_url,
        model="cheap-model",
        api_key_env=key_env,
        request_timeout_ms=2000,
        max_connections=8,
    )
    c = OpenAIChatClient("cheap", cfg)
    yield c
    await c.aclose()


def call(timeout_s: float = 2.0, **params) -> ChatCall:
    return ChatCall(messages=MESSAGES, params=params, timeout_s=timeout_s)


async def test_success(client, server):
    assert isinstance(client, ModelClient)
    result = await client.complete(call(temperature=0.2, max_tokens=30, model="sneaky", stream=True))
    assert isinstance(result, Completion)
    assert result.text == "[cheap] answer to: " + MESSAGES[0]["content"][:40]
    assert result.provider_model == "cheap-v1"
    assert result.status == 200 and result.latency_ms > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0
    body = server.stats()["last_body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 30
    assert body["model"] == "cheap-model" and "stream" not in body
    assert server.stats()["auth_present"] == 1


async def test_no_key_configured_sends_no_header(server):
    cfg = CandidateConfig(base_url=server.base_url, model="m")
    c = OpenAIChatClient("cheap", cfg)
    try:
        with pytest.raises(FatalModelError) as info:
            await c.complete(call())
        assert info.value.kind == "auth" and info.value.status == 401
        assert server.stats()["auth_missing"] == 1
    finally:
        await c.aclose()


@pytest.mark.parametrize(
    "mode,cls,kind,status",
    [
        ("429", RetryableModelError, "throttled", 429),
        ("500", RetryableModelError, "server_error", 500),
        ("503", RetryableModelError, "server_error", 503),
        ("502", RetryableModelError, "server_error", 502),
        ("408", RetryableModelError, "http_error", 408),
        ("409", RetryableModelError, "http_error", 409),
        ("400", FatalModelError, "client_error", 400),
        ("404", FatalModelError, "client_error", 404),
        ("422", FatalModelError, "client_error", 422),
        ("403", FatalModelError, "auth", 403),
        ("reset", RetryableModelError, "connection", None),
        ("malformed", RetryableModelError, "malformed", 200),
        ("down", RetryableModelError, "server_error", 503),
    ],
)
async def test_fault_mapping(client, server, mode, cls, kind, status):
    server.set_faults(faults={mode: 1.0})
    with pytest.raises(ModelError) as info:
        await client.complete(call())
    err = info.value
    assert type(err) is cls and err.kind == kind and err.status == status
    assert str(err).startswith("cheap: ")
    assert KEY not in str(err) and KEY not in repr(err)
    assert (err.__cause__ is None and err.__context__ is None) or err.__suppress_context__


@pytest.mark.parametrize("kind", ["not_json", "no_choices", "no_content"])
async def test_malformed_variants(client, server, kind):
    server.set_faults(faults={"malformed": 1.0}, malformed_kind=kind)
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call())
    assert info.value.kind == "malformed"


async def test_down_close_is_a_connection_error(client, server):
    server.set_faults(faults={"down": 1.0}, down_mode="close")
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call())
    assert info.value.kind == "connection"


async def test_hang_is_a_timeout(client, server):
    server.set_faults(faults={"timeout": 1.0})
    t0 = time.monotonic()
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call(timeout_s=0.2))
    assert info.value.kind == "timeout"
    assert time.monotonic() - t0 < 1.5


async def test_slow_drip_body_is_a_timeout(client, server):
    # the headers arrive at once; only a whole-call timeout catches a body that never finishes
    server.set_faults(faults={"slow_drip": 1.0}, drip_interval_ms=50, drip_chunk_bytes=4)
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call(timeout_s=0.3))
    assert info.value.kind == "timeout"


async def test_connection_refused_is_a_connection_error(key_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OpenAIChatClient(
        "gone", CandidateConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=key_env)
    )
    try:
        with pytest.raises(RetryableModelError) as info:
            await c.complete(call())
        assert info.value.kind == "connection"
        assert KEY not in str(info.value)
    finally:
        await c.aclose()


async def test_retry_after_is_parsed(client, server):
    server.set_faults(faults={"429": 1.0}, retry_after=7)
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call())
    assert info.value.retry_after == 7
    server.set_faults(faults={"503": 1.0}, retry_after=20, retry_after_format="http-date")
    with pytest.raises(RetryableModelError) as info:
        await client.complete(call())
    assert 10 <= info.value.retry_after <= 21


def test_parse_retry_after_forms():
    now = time.time()
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(now + 60, usegmt=True)
    assert 55 <= parse_retry_after({"retry-after": date}, now=now) <= 61
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


async def test_key_never_leaks(client, server, caplog):
    caplog.set_level(logging.DEBUG)
    assert KEY not in repr(client)
    messages = []
    for mode in ["429", "500", "503", "400", "401", "reset", "malformed", "timeout", "down"]:
        server.set_faults(faults={mode: 1.0})
        try:
            await client.complete(call(timeout_s=0.2))
        except ModelError as exc:
            messages.append(f"{exc!s} {exc!r} {exc.args}")
    assert len(messages) == 9
    assert all(KEY not in m for m in messages)
    assert KEY not in caplog.text
    assert server.stats()["auth_present"] == server.stats()["calls"] > 0


def test_prompt_estimate():
    msgs = [{"role": "user", "content": "x" * 400}, {"role": "system", "content": ""}]
    assert estimate_prompt_tokens(msgs) == 100 + 4 + 4


async def test_shares_one_http_client_across_concurrent_calls(client, server):
    import asyncio

    server.set_faults(latency_ms=50)
    results = await asyncio.gather(*(client.complete(call()) for _ in range(20)))
    assert len(results) == 20 and server.stats()["max_in_flight"] > 1


async def test_model_http_client_keeps_no_cookies():
    """A Set-Cookie from a balancer must not follow later calls (and the jar stays empty)."""
    import httpx

    from router_stream.providers.http_transport import ModelHTTPClient

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, json={}, headers={"set-cookie": "affinity=node-3; Path=/"})

    async with ModelHTTPClient(transport=httpx.MockTransport(handler)) as http:
        for _ in range(2):
            await http.post("http://model.test/v1/chat/completions", json={})
        assert len(http.cookies) == 0
        with pytest.raises(TypeError):
            http.cookies = {"a": "b"}
    assert seen == [None, None]


async def test_request_carries_headers_body_and_key(server, key_env):
    """The hand-built request sends what AsyncClient.post(json=...) would, plus the bearer key."""
    import json as _json

    cfg = CandidateConfig(base_url=server.base_url, model="m1", api_key_env=key_env)
    client = OpenAIChatClient("cheap", cfg)
    try:
        req = client._request(
            client.dialect.request({"model": "m1", "messages": [{"role": "user", "content": "héllo"}]})
        )
        assert req.method == "POST" and str(req.url) == f"{server.base_url}/chat/completions"
        assert req.headers["content-type"] == "application/json"
        assert req.headers["accept"] == "application/json"
        assert req.headers["authorization"].startswith("Bearer ")
        assert int(req.headers["content-length"]) == len(req.content)
        assert _json.loads(req.content)["messages"][0]["content"] == "héllo"
    finally:
        await client.aclose()


async def test_a_lone_surrogate_in_an_answer_is_replaced_so_the_response_serializes(client, server):
    server.set_faults(answer="ok \ud800 then \U0001f600")  # JSON carries "\ud800": valid JSON, not UTF-8
    result = await client.complete(call())
    assert result.text == "ok \ufffd then \U0001f600"
    result.text.encode("utf-8")  # what the response record needs


def test_content_parts_text_joins_text_parts_and_refuses_others():
    from router_stream.config import CandidateConfig
    from router_stream.errors import FatalModelError
    from router_stream.providers.dialect import OpenAIDialect

    cfg = CandidateConfig(base_url="http://127.0.0.1:9/v1", model="m", content_parts="text")
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe"}, {"type": "text", "text": "a cat."}],
            },
        ],
    }
    wire = OpenAIDialect("local", cfg).request(body)
    assert wire.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Describe\na cat."},
    ]
    assert body["messages"][1]["content"][0] == {
        "type": "text",
        "text": "Describe",
    }  # the caller's body is kept
    image = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
            }
        ],
    }
    with pytest.raises(FatalModelError) as exc:
        OpenAIDialect("local", cfg).request(image)
    assert exc.value.kind == "unsupported_input" and "image_url content part" in str(exc.value)
    native = CandidateConfig(base_url="http://127.0.0.1:9/v1", model="m")
    assert OpenAIDialect("local", native).request(image).body is image  # default: parts go as they are
