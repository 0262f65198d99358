"""The whole answer: parsing an OpenAI chat-completion response into a Completion, and the
clients (online, micro-batching, Batch API) carrying it, against the loopback server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from router_stream.config import CandidateConfig
from router_stream.errors import RetryableModelError
from router_stream.providers.base import ChatCall, Completion
from router_stream.providers.batching import BatchingClient
from router_stream.providers.micro_batch_sharing import unbatchable_reason
from router_stream.providers.openai import OpenAIChatClient, openai_body
from router_stream.providers.openai_answer import completion_from_openai
from router_stream.schemas import Response
from router_stream_dev.model_server import ModelServer

MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
}


def answer(*messages: dict[str, Any], finish: str = "stop", **top: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "gpt-x-2025",
        "choices": [
            {"index": i, "message": m, "logprobs": None, "finish_reason": finish}
            for i, m in enumerate(messages)
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        **top,
    }


def parse(data: Any, **kw: Any) -> Completion:
    return completion_from_openai(
        data, name="cand", default_model="fallback-model", messages=MESSAGES, latency_ms=3.0, **kw
    )


# ---------------------------------------------------------------- parsing
def test_a_tool_calls_only_answer_is_an_answer_not_malformed() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [TOOL_CALL],
        "refusal": None,
        "annotations": [],
    }
    c = parse(answer(message, finish="tool_calls"))
    assert c.text == "" and c.message == message and c.finish_reason == "tool_calls"
    fields = c.answer_fields()
    assert fields["output"] is None and fields["message"]["tool_calls"] == [TOOL_CALL]
    response = Response(request_id="r", **fields)
    assert json.loads(response.model_dump_json())["message"] == message  # a consumer appends this as is


def test_a_refusal_is_an_answer_and_kept() -> None:
    c = parse(answer({"role": "assistant", "content": None, "refusal": "I can't help with that."}))
    assert c.message is not None and c.message["refusal"] == "I can't help with that."
    assert c.answer_fields()["output"] is None


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant"},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "assistant", "content": 5},
        "text",
    ],
)
def test_a_message_with_neither_content_tool_calls_nor_refusal_is_malformed(message: Any) -> None:
    with pytest.raises(RetryableModelError) as info:
        parse(answer(message))
    assert info.value.kind == "malformed" and "no message content, tool calls or refusal" in str(info.value)


@pytest.mark.parametrize(
    "data,why",
    [
        ([], "not an object"),
        ({}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": ["x"]}, "no choices"),
    ],
)
def test_no_choices_is_malformed(data: Any, why: str) -> None:
    with pytest.raises(RetryableModelError, match=why):
        parse(data)


def test_n_choices_are_all_kept_and_the_first_is_the_answer() -> None:
    c = parse(
        answer(
            {"role": "assistant", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "assistant", "content": "three"},
        )
    )
    assert c.text == "one" and c.choices is not None and len(c.choices) == 3
    assert [ch["message"]["content"] for ch in c.choices] == ["one", "two", "three"]
    assert [ch["index"] for ch in c.choices] == [0, 1, 2]
    assert parse(answer({"role": "assistant", "content": "only"})).choices is None


def test_usage_details_finish_reason_id_and_fingerprint_are_kept() -> None:
    data = answer(
        {"role": "assistant", "content": "cut off mid"},
        finish="length",
        system_fingerprint="fp_1",
        service_tier="default",
    )
    data["usage"] = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 256,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
        },
    }
    c = parse(data)
    assert (
        c.finish_reason == "length" and c.response_id == "chatcmpl-abc" and c.provider_model == "gpt-x-2025"
    )
    assert c.usage.prompt_tokens_details == {"cached_tokens": 1920, "audio_tokens": 0}
    assert c.usage.completion_tokens_details is not None
    assert c.usage.completion_tokens_details["reasoning_tokens"] == 256
    assert (c.system_fingerprint, c.service_tier) == ("fp_1", "default")
    r = Response(request_id="r", **c.answer_fields())
    assert r.finish_reason == "length" and r.usage is not None and r.usage.total_tokens == 2300


def test_without_usage_the_estimate_counts_tool_calls() -> None:
    data = answer({"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]})
    del data["usage"]
    c = parse(data)
    assert c.usage.completion_tokens >= len(json.dumps([TOOL_CALL])) // 4 > 0


def test_lone_surrogates_anywhere_in_the_message_are_made_serializable() -> None:
    raw = (
        '{"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",'
        ' "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f",'
        ' "arguments": "{\\"a\\": \\"\\ud800\\"}"}}]}}]}'
    )
    assert "\ud800" in json.loads(raw)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    c = parse(json.loads(raw))
    assert c.message is not None
    assert c.message["tool_calls"][0]["function"]["arguments"] == '{"a": "\ufffd"}'
    Response(request_id="r", **c.answer_fields()).model_dump_json().encode(
        "utf-8"
    )  # a lone surrogate would raise


def test_the_body_allows_n_and_drops_model_messages_stream_and_stream_options() -> None:
    call = ChatCall(
        messages=MESSAGES,
        params={
            "n": 2,
            "tools": TOOLS,
            "model": "x",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [],
        },
    )
    body = openai_body(call, "real-model")
    assert body == {"n": 2, "tools": TOOLS, "model": "real-model", "messages": MESSAGES}


# ---------------------------------------------------------------- over HTTP, against the loopback server
@pytest.fixture
async def server():
    async with ModelServer("cheap", provider_model="cheap-v1") as srv:
        yield srv


@pytest.fixture
async def client(server):
    c = OpenAIChatClient("cheap", CandidateConfig(base_url=server.base_url, model="cheap-model"))
    yield c
    await c.aclose()


async def test_the_client_returns_the_tool_call_and_then_the_answer_to_the_tool_result(client, server):
    first = await client.complete(ChatCall(messages=MESSAGES, params={"tools": TOOLS}))
    assert first.finish_reason == "tool_calls" and first.text == ""
    assert first.message is not None and first.message["content"] is None
    (call,) = first.message["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Weather in Oslo?", "days": 1}
    assert first.response_id and first.response_id.startswith("chatcmpl-")
    turn2 = [
        *MESSAGES,
        first.message,
        {"role": "tool", "tool_call_id": call["id"], "content": "3 degrees, rain"},
    ]
    second = await client.complete(ChatCall(messages=turn2, params={"tools": TOOLS}))
    assert second.finish_reason == "stop" and second.text == "[cheap] tool result: 3 degrees, rain"
    assert server.received_bodies()[-1]["messages"][1]["tool_calls"] == [call]


async def test_the_client_asks_for_n_and_keeps_every_choice(client, server):
    c = await client.complete(ChatCall(messages=MESSAGES, params={"n": 3, "stream": True}))
    assert c.choices is not None and len(c.choices) == 3
    assert c.text == "[cheap] answer to: Weather in Oslo?" and c.choices[2]["message"]["content"].endswith(
        " #2"
    )
    body = server.stats()["last_body"]
    assert body["n"] == 3 and "stream" not in body


async def test_content_parts_reach_the_model_as_given(client, server):
    parts = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "https://x/c.png"}},
    ]
    c = await client.complete(ChatCall(messages=[{"role": "user", "content": parts}]))
    assert c.text == "[cheap] answer to: Describe [image_url]"
    assert server.stats()["last_body"]["messages"][0]["content"] == parts


# ---------------------------------------------------------------- micro-batching
@pytest.mark.parametrize(
    "params,why",
    [
        ({"n": 2}, "n > 1"),
        ({"tools": TOOLS}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ],
)
def test_answers_a_batched_text_cannot_carry_go_alone(params: dict[str, Any], why: str) -> None:
    assert unbatchable_reason(params) == why


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"n": 1},
        {"temperature": 0},
        {"response_format": {"type": "text"}},
        {"tools": []},
        {"logprobs": False},
    ],
)
def test_plain_params_may_share_a_batch(params: dict[str, Any]) -> None:
    assert unbatchable_reason(params) is None


async def test_a_batching_client_sends_tool_requests_alone_and_batches_the_rest(server):
    cfg = CandidateConfig(
        base_url=server.base_url,
        model="cheap-model",
        request_timeout_ms=3000,
        batch={"size": 3, "timeout_ms": 300},
    )
    client = BatchingClient("cheap", cfg, OpenAIChatClient("cheap", cfg), owns_inner=True)
    try:
        plain = [
            client.complete(ChatCall(messages=[{"role": "user", "content": f"q{i}"}], timeout_s=5))
            for i in range(3)
        ]
        tool = client.complete(ChatCall(messages=MESSAGES, params={"tools": TOOLS}, timeout_s=5))
        *answers, called = await asyncio.gather(*plain, tool)
    finally:
        await client.aclose()
    assert called.batch is None and called.finish_reason == "tool_calls" and called.message is not None
    assert called.message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert server.stats()["batched_calls"] == 1 and server.stats()["calls"] == 2
    assert [a.text for a in answers] == [f"[cheap] answer to: q{i}" for i in range(3)]
    assert all(
        a.batch["answered"] == "batch" and a.finish_reason == "stop" and a.message is None for a in answers
    )
    assert len({a.response_id for a in answers}) == 1  # the batched call's id, shared
    fields = answers[0].answer_fields()
    assert fields["message"] == {"role": "assistant", "content": "[cheap] answer to: q0"}


# ---------------------------------------------------------------- the Batch API
async def test_a_batch_api_line_carries_the_whole_answer_tool_calls_included():
    from router_stream.providers.batch_api import BatchAPIClient

    async with ModelServer("bulk", batch_complete_s=0.1) as srv:
        cfg = CandidateConfig(
            base_url=srv.base_url, model="bulk-model", mode="batch", request_timeout_ms=2000
        )
        client = BatchAPIClient("bulk", cfg)
        try:
            job = await client.submit(
                [
                    ("t", ChatCall(MESSAGES, {"tools": TOOLS, "n": 2})),
                    ("p", ChatCall([{"role": "user", "content": "plain"}], {})),
                ]
            )
            for _ in range(200):
                st = await client.status(job)
                if st.done:
                    break
                await asyncio.sleep(0.02)
            res = await client.results(st, expected=["t", "p"])
        finally:
            await client.aclose()
    tool, plain = res["t"], res["p"]
    assert isinstance(tool, Completion) and isinstance(plain, Completion)
    assert tool.finish_reason == "tool_calls" and tool.message is not None and tool.message["content"] is None
    assert tool.choices is not None and len(tool.choices) == 2 and tool.response_id
    assert plain.text == "[bulk] answer to: plain" and plain.finish_reason == "stop" and plain.choices is None
