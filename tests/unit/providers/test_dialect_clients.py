"""The one client with each adapter, against the loopback server's dialects over real HTTP."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from router_stream.config import CandidateConfig
from router_stream.errors import FatalModelError, RetryableModelError
from router_stream.providers.anthropic import to_openai_response
from router_stream.providers.base import ChatCall
from router_stream.providers.http_transport import shared_http_client
from router_stream.providers.openai import OpenAIChatClient
from router_stream_dev.dialects import fingerprint
from router_stream_dev.model_server import ModelServer

KEY = "sk-test-DIALECT-7f3a9c0b1d2e"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
async def server(monkeypatch):
    monkeypatch.setenv("RS_DIALECT_KEY", KEY)
    async with ModelServer("loop", api_key=KEY, retry_after=2) as srv:
        yield srv


@pytest.fixture
async def clients():
    made = []

    def make(**kw) -> OpenAIChatClient:
        kw.setdefault("api_key_env", "RS_DIALECT_KEY")
        kw.setdefault("request_timeout_ms", 3000)
        client = OpenAIChatClient(kw.pop("name", "c"), CandidateConfig(**kw))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def root(server: ModelServer) -> str:
    return server.base_url.removesuffix("/v1")


# ---- anthropic ------------------------------------------------------------------------------
async def test_anthropic_plain_answer(server, clients):
    client = clients(base_url=root(server), model="claude-x", api="anthropic")
    done = await client.complete(ChatCall(messages=ASK, params={"seed": 3, "max_tokens": 64, "stop": "\n\n"}))
    assert done.text == "[loop] answer to: Weather in Paris?" and done.provider_model == "claude-x"
    assert done.dropped_params == ["seed"] and done.usage.total_tokens > 0
    stats = server.dialects.stats()
    assert stats["anthropic_calls"] == 1 and stats["rejected"] == 0
    assert stats["last_anthropic_body"] == {
        "model": "claude-x",
        "max_tokens": 64,
        "system": "Be brief.",
        "stop_sequences": ["\n\n"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
    }
    assert stats["last_headers"]["x-api-key"] == fingerprint(KEY)
    assert stats["last_headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in stats["last_headers"]


async def test_anthropic_tool_request_goes_natively_and_is_answered(server, clients):
    client = clients(base_url=root(server), model="claude-x", api="anthropic")
    done = await client.complete(
        ChatCall(
            messages=ASK, params={"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
        )
    )
    assert (
        done.status == 200 and done.provider_model == "claude-x" and server.dialects.stats()["rejected"] == 0
    )
    body = server.dialects.stats()["last_anthropic_body"]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather of a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


async def test_anthropic_tool_loop_second_turn_is_a_valid_messages_request(server, clients):
    """The app answers the tool call with a tool message: the server (which checks that every
    tool_result answers a tool_use of the previous turn) accepts it and the model answers."""
    client = clients(base_url=server.base_url, model="claude-x", api="anthropic")  # a /v1 base_url works too
    turn = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C and sunny"},
    ]
    done = await client.complete(ChatCall(messages=turn, params={"tools": [WEATHER]}))
    assert done.text.startswith("[loop] ")
    assert server.dialects.stats()["rejected"] == 0
    sent = server.dialects.stats()["last_anthropic_body"]["messages"]
    assert sent[-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"}],
    }


async def test_the_loopback_answer_translates_to_tool_calls_and_length(server):
    """The raw Messages API answers of the loopback server through the adapter's translation."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    base = {"model": "claude-x", "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    async with httpx.AsyncClient() as http:
        tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
        raw = (
            await http.post(
                f"{root(server)}/v1/messages",
                headers=headers,
                json={**base, "max_tokens": 100, "tools": tools},
            )
        ).json()
        assert raw["type"] == "message" and raw["id"].startswith("msg_") and raw["stop_reason"] == "tool_use"
        out = to_openai_response("c", raw)
        call = out["choices"][0]["message"]["tool_calls"][0]
        assert (
            out["choices"][0]["finish_reason"] == "tool_calls" and call["function"]["name"] == "get_weather"
        )
        args = json.loads(call["function"]["arguments"])
        assert list(args) == ["city"] and isinstance(args["city"], str)  # fits the tool's input_schema
        short = (
            await http.post(f"{root(server)}/v1/messages", headers=headers, json={**base, "max_tokens": 2})
        ).json()
        assert to_openai_response("c", short)["choices"][0]["finish_reason"] == "length"
        stop = (
            await http.post(
                f"{root(server)}/v1/messages",
                headers=headers,
                json={**base, "max_tokens": 100, "stop_sequences": ["answer"]},
            )
        ).json()
        assert stop["stop_reason"] == "stop_sequence" and stop["content"][0]["text"] == "[loop] "


@pytest.mark.parametrize(
    "mode,cls,kind,retry_after",
    [
        ("429", RetryableModelError, "throttled", 2),
        ("529", RetryableModelError, "overloaded", 2),
        ("503", RetryableModelError, "server_error", 2),
        ("500", RetryableModelError, "server_error", None),
        ("401", FatalModelError, "auth", None),
        ("400", FatalModelError, "client_error", None),
        ("malformed", RetryableModelError, "malformed", None),
        ("reset", RetryableModelError, "connection", None),
    ],
)
async def test_anthropic_errors_from_the_loopback_server(server, clients, mode, cls, kind, retry_after):
    client = clients(base_url=root(server), model="claude-x", api="anthropic")
    server.script(mode)
    with pytest.raises(cls) as info:
        await client.complete(ChatCall(messages=ASK, timeout_s=3))
    assert info.value.kind == kind and info.value.retry_after == retry_after
    assert KEY not in str(info.value)


async def test_anthropic_wrong_key_and_refused_fields(server, clients, monkeypatch):
    client = clients(base_url=root(server), model="claude-x", api="anthropic")
    monkeypatch.setenv("RS_DIALECT_KEY", "sk-wrong-key-0000")
    with pytest.raises(FatalModelError) as info:
        await client.complete(ChatCall(messages=ASK))
    assert info.value.kind == "auth" and "sk-wrong" not in str(info.value)


async def test_anthropic_unsupported_input_calls_nobody(server, clients):
    client = clients(base_url=root(server), model="claude-x", api="anthropic")
    audio = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
        }
    ]
    with pytest.raises(FatalModelError) as info:
        await client.complete(ChatCall(messages=audio))
    assert info.value.kind == "unsupported_input" and "messages[0].content[0]" in str(info.value)
    assert server.dialects.stats()["anthropic_calls"] == 0 and server.stats()["calls"] == 0


async def test_anthropic_default_max_tokens_from_config(server, clients):
    client = clients(
        base_url=root(server),
        model="claude-x",
        api="anthropic",
        default_max_tokens=321,
        api_version="2023-06-01",
    )
    await client.complete(ChatCall(messages=ASK))
    assert server.dialects.stats()["last_anthropic_body"]["max_tokens"] == 321


# ---- azure ----------------------------------------------------------------------------------
async def test_azure_deployment_url_api_version_and_api_key(server, clients):
    client = clients(
        base_url=root(server),
        model="gpt-4o",
        deployment="prod-4o",
        api="azure-openai",
        api_version="2024-10-21",
    )
    done = await client.complete(ChatCall(messages=ASK, params={"temperature": 0.2}))
    assert done.text == "[loop] answer to: Weather in Paris?" and done.provider_model == "prod-4o"
    assert done.dropped_params == []
    last = server.dialects.stats()["last_azure"]
    assert last["deployment"] == "prod-4o" and last["api_version"] == "2024-10-21"
    assert "model" not in last["body"] and last["body"]["temperature"] == 0.2
    headers = server.dialects.stats()["last_headers"]
    assert headers["api-key"] == fingerprint(KEY) and "authorization" not in headers
    assert client.url == f"{root(server)}/openai/deployments/prod-4o/chat/completions"


async def test_azure_errors(server, clients, monkeypatch):
    client = clients(base_url=root(server), model="gpt-4o", api="azure-openai", api_version="2024-10-21")
    server.script("429")
    with pytest.raises(RetryableModelError) as info:
        await client.complete(ChatCall(messages=ASK))
    assert info.value.kind == "throttled" and info.value.retry_after == 2
    monkeypatch.delenv("RS_DIALECT_KEY")
    with pytest.raises(FatalModelError) as info:
        await client.complete(ChatCall(messages=ASK))
    assert (
        info.value.kind == "auth"
        and server.dialects.stats()["last_rejection"] == "azure: api-key missing or wrong"
    )


def test_azure_content_filter_400_is_its_own_kind():
    client = OpenAIChatClient(
        "az",
        CandidateConfig(
            base_url="https://r.openai.azure.com", model="m", api="azure-openai", api_version="2024-10-21"
        ),
    )
    body = {"error": {"code": "content_filter", "message": "The response was filtered", "status": 400}}
    err = client.dialect.status_error(httpx.Response(400, json=body))
    assert isinstance(err, FatalModelError) and err.kind == "content_filter"
    assert (
        client.dialect.status_error(httpx.Response(400, json={"error": {"code": "other"}})).kind
        == "client_error"
    )


async def test_azure_with_an_entra_token_header_instead_of_a_key(server, clients, monkeypatch):
    monkeypatch.setenv("AZ_TOKEN", "Bearer entra-token-abc")
    server.dialects.api_key = None  # this deployment takes the token; the server checks no api-key
    client = clients(
        base_url=root(server),
        model="gpt-4o",
        api="azure-openai",
        api_version="2024-10-21",
        api_key_env=None,
        headers={"Authorization": {"env": "AZ_TOKEN"}},
    )
    await client.complete(ChatCall(messages=ASK))
    headers = server.dialects.stats()["last_headers"]
    assert headers["authorization"] == fingerprint("Bearer entra-token-abc") and "api-key" not in headers


# ---- gateway headers and query (api: openai) ----------------------------------------------------
async def test_gateway_headers_and_query_on_the_wire_but_not_in_logs(server, clients, monkeypatch, caplog):
    secret = "gw-" + KEY
    monkeypatch.setenv("GW_TOKEN", "Bearer " + secret)
    monkeypatch.setenv("GW_KEY", secret)
    caplog.set_level(logging.INFO, logger="httpx")
    client = clients(
        base_url=f"{root(server)}/gateway/v1",
        model="m",
        api_key_env=None,
        headers={"X-Team": "search", "Authorization": {"env": "GW_TOKEN"}, "User-Agent": "my-app"},
        query={"team": "a", "key": {"env": "GW_KEY"}},
    )
    done = await client.complete(ChatCall(messages=ASK))
    assert done.text.startswith("[loop]")
    stats = server.dialects.stats()
    assert stats["last_headers"]["x-team"] == "search" and stats["last_headers"]["user-agent"] == "my-app"
    assert stats["last_headers"]["authorization"] == fingerprint("Bearer " + secret)
    assert stats["last_gateway"]["query"] == {"team": "a", "key": fingerprint(secret)}
    # the online client hands requests to its transport itself: httpx's client logs nothing. The
    # Batch API client goes through httpx.AsyncClient, which logs each request at INFO...
    async with shared_http_client(client.cfg, 5.0) as http:
        await http.post(client.dialect.url(), json={"model": "m", "messages": ASK})
    assert "HTTP Request: POST" in caplog.text
    assert secret not in caplog.text and "key=" not in caplog.text  # ...without its query string
    monkeypatch.setenv("GW_KEY", secret + "2")  # rotated: the next call sends the new value
    await client.complete(ChatCall(messages=ASK))
    assert server.dialects.stats()["last_gateway"]["query"]["key"] == fingerprint(secret + "2")


async def test_an_unset_env_header_is_left_out(server, clients, monkeypatch):
    monkeypatch.delenv("GW_TOKEN", raising=False)
    client = clients(
        base_url=f"{root(server)}/gateway/v1",
        model="m",
        api_key_env=None,
        headers={"Authorization": {"env": "GW_TOKEN"}},
    )
    await client.complete(ChatCall(messages=ASK))
    assert "authorization" not in server.dialects.stats()["last_headers"]


# ---- through the dispatcher -----------------------------------------------------------------
async def test_dispatcher_falls_back_on_unsupported_input_and_audits_dropped_params(server):
    import time

    from router_stream.config import parse_config
    from router_stream.providers.resilience import Dispatcher
    from router_stream.schemas import Request

    config = parse_config(
        {
            "candidates": {
                "claude": {
                    "base_url": root(server),
                    "model": "claude-x",
                    "api": "anthropic",
                    "api_key_env": "RS_DIALECT_KEY",
                    "fallbacks": ["gpt"],
                },
                "gpt": {"base_url": server.base_url, "model": "gpt-x", "api_key_env": "RS_DIALECT_KEY"},
            },
            "default": "claude",
        }
    )
    dispatcher = Dispatcher(config)
    try:
        plain = await dispatcher.call(
            Request(request_id="r1", prompt="hi", params={"seed": 1, "logprobs": True}),
            "claude",
            time.monotonic() + 5,
        )
        assert plain.served_by == "claude"
        assert plain.attempts[0].dropped_params == ["logprobs", "seed"]
        custom_tool = Request(
            request_id="r2",
            messages=[{"role": "user", "content": "x"}],
            params={"tools": [{"type": "custom", "custom": {"name": "grep"}}]},
        )
        moved = await dispatcher.call(custom_tool, "claude", time.monotonic() + 5)
        assert moved.served_by == "gpt" and moved.attempts[1].dropped_params is None
        assert [(a.candidate, a.outcome, a.error_kind) for a in moved.attempts] == [
            ("claude", "error", "unsupported_input"),
            ("gpt", "ok", None),
        ]
        assert dispatcher.breaker_states()["claude"] == "closed"
    finally:
        await dispatcher.aclose()


async def test_micro_batching_works_on_an_anthropic_candidate(server):
    """batch.size > 1 wraps whichever client a candidate has: the batched prompt goes through
    the Messages API translation and each record still gets its own answer."""
    import asyncio
    import time

    from router_stream.config import parse_config
    from router_stream.providers.resilience import Dispatcher
    from router_stream.schemas import Request

    config = parse_config(
        {
            "candidates": {
                "claude": {
                    "base_url": root(server),
                    "model": "claude-x",
                    "api": "anthropic",
                    "api_key_env": "RS_DIALECT_KEY",
                    "batch": {"size": 3, "timeout_ms": 200},
                }
            },
            "default": "claude",
        }
    )
    dispatcher = Dispatcher(config)
    try:
        results = await asyncio.gather(
            *(
                dispatcher.call(
                    Request(request_id=f"r{i}", prompt=f"question {i}"), "claude", time.monotonic() + 5
                )
                for i in range(3)
            )
        )
    finally:
        await dispatcher.aclose()
    assert [r.completion.text for r in results] == [f"[loop] answer to: question {i}" for i in range(3)]
    assert server.stats()["batched_calls"] == 1 and server.dialects.stats()["anthropic_calls"] == 1
    assert "system" in server.dialects.stats()["last_anthropic_body"]  # the batch instructions


async def test_the_dispatcher_waits_out_retry_after_of_a_529_then_succeeds(server):
    import asyncio
    import time

    from router_stream.config import parse_config
    from router_stream.providers.resilience import Dispatcher
    from router_stream.schemas import Request

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    config = parse_config(
        {
            "candidates": {
                "claude": {
                    "base_url": root(server),
                    "model": "claude-x",
                    "api": "anthropic",
                    "api_key_env": "RS_DIALECT_KEY",
                }
            },
            "default": "claude",
        }
    )
    dispatcher = Dispatcher(config, sleep=sleep)
    server.script("529", "429")
    try:
        result = await dispatcher.call(Request(request_id="r", prompt="hi"), "claude", time.monotonic() + 30)
    finally:
        await dispatcher.aclose()
    assert result.served_by == "claude"
    assert [(a.outcome, a.error_kind, a.status) for a in result.attempts] == [
        ("error", "overloaded", 529),
        ("error", "throttled", 429),
        ("ok", None, 200),
    ]
    assert len(slept) == 2 and all(s >= 2 for s in slept)  # the server's Retry-After: 2


async def test_a_base_url_with_a_query_keeps_it_after_the_path(server, clients):
    client = clients(
        base_url=f"{root(server)}/gateway/v1?team=a&region=eu",
        model="m",
        api_key_env=None,
        query={"tier": "gold"},
    )
    await client.complete(ChatCall(messages=ASK))
    assert server.dialects.stats()["last_gateway"]["query"] == {"team": "a", "region": "eu", "tier": "gold"}
    assert client.url == f"{root(server)}/gateway/v1/chat/completions"  # shown without the query
