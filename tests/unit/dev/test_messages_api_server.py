"""The loopback server's Messages API checks: what the real API refuses, it refuses too (so a
test passing against it means the adapter sent a request the API documents as valid)."""

from __future__ import annotations

import pytest

from router_stream_dev.messages_api import to_messages_answer, validate_messages_request

OK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]}


def test_a_minimal_request_passes():
    assert validate_messages_request(OK) is None


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"n": 2}, "n: Extra inputs are not permitted"),
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"temperature": 1.5}, "temperature: Input should be between 0 and 1"),
        ({"messages": []}, "messages: Input should be a non-empty list"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "must be non-empty"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
                    }
                ]
            },
            "unexpected tool_use_id",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    USE,
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "and"},
                            {"type": "tool_result", "tool_use_id": "t1", "content": "x"},
                        ],
                    },
                ]
            },
            "tool_result blocks must come first",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/tiff", "data": "x"},
                            }
                        ],
                    }
                ]
            },
            "media_type: not supported",
        ),
        ({"tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}, "tools.0.name"),
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
        ({"metadata": {"team": "x"}}, "metadata: only user_id"),
    ],
)
def test_what_the_api_refuses(change, problem):
    body = {**OK, **change}
    if change.get("max_tokens", 0) is None:
        del body["max_tokens"]
    assert problem in (validate_messages_request(body) or "")


def test_a_tool_result_answering_the_previous_turn_passes():
    body = {
        **OK,
        "tools": [TOOL],
        "messages": [
            {"role": "user", "content": "q"},
            USE,
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    }
    assert validate_messages_request(body) is None


def test_the_answer_calls_a_tool_only_until_the_tool_has_answered():
    chat = {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": {"prompt_tokens": 5}}
    first = to_messages_answer({**OK, "tools": [TOOL]}, chat)
    assert first["stop_reason"] == "tool_use" and [b["type"] for b in first["content"]] == [
        "text",
        "tool_use",
    ]
    assert first["content"][1]["input"] == {"city": "sample"}
    answered = {
        **OK,
        "tools": [TOOL],
        "messages": [
            {"role": "user", "content": "q"},
            USE,
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18C"}]},
        ],
    }
    assert to_messages_answer(answered, chat)["stop_reason"] == "end_turn"
    assert (
        to_messages_answer({**OK, "tools": [TOOL], "tool_choice": {"type": "none"}}, chat)["stop_reason"]
        == "end_turn"
    )
    assert to_messages_answer(OK, {"choices": []}) is None
