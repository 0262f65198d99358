"""The Anthropic adapter's translations, both ways, and its error mapping (pure functions).

Translated requests are also checked by the loopback server's Messages API validator
(:mod:`router_stream_dev.messages_api`), written separately from the API reference.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from router_stream.errors import FatalModelError, RetryableModelError
from router_stream.providers.anthropic import anthropic_status_error, to_openai_response
from router_stream.providers.anthropic_request import Unsupported, to_messages_request
from router_stream_dev.messages_api import validate_messages_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def translate(**body):
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_messages_request(body, default_max_tokens=777)


def test_system_and_developer_messages_become_the_top_level_system():
    out, dropped = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Describe a cat."},
        ]
    )
    assert out["system"] == "Be brief.\n\nAnswer in French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Describe a cat."}]}]
    assert out["model"] == "claude-x" and dropped == []
    assert validate_messages_request(out) is None


def test_content_parts_become_blocks():
    out, dropped = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {
                        "type": "file",
                        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "cat.pdf"},
                    },
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:text/plain;base64," + base64.b64encode(b"notes").decode()
                        },
                    },
                ],
            }
        ]
    )
    blocks = out["messages"][0]["content"]
    assert blocks[0] == {"type": "text", "text": "What is in these?"}
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert blocks[3] == {
        "type": "document",
        "title": "cat.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
    }
    assert blocks[4]["source"] == {"type": "text", "media_type": "text/plain", "data": "notes"}
    assert dropped == ["image_url.detail"]
    assert validate_messages_request(out) is None


@pytest.mark.parametrize(
    "part,named",
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "'input_audio'"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "file_id"),
        ({"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}, "image/tiff"),
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/x.png"}}, "data: URL"),
        ({"type": "file", "file": {"file_data": "data:application/zip;base64,AAAA"}}, "application/zip"),
    ],
)
def test_parts_anthropic_cannot_take_are_refused_by_name(part, named):
    with pytest.raises(Unsupported) as info:
        translate(messages=[{"role": "user", "content": [part]}])
    assert "messages[0].content[0]" in str(info.value) and named in str(info.value)


def test_a_tool_loop_translates_to_tool_use_and_merged_tool_results():
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?", "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "And in Kelvin?"},
    ]
    out, dropped = translate(messages=messages, tools=[WEATHER])
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"type": "text", "text": "And in Kelvin?"},
    ]
    assert dropped == ["messages[].name"]
    assert validate_messages_request(out) is None


def test_assistant_text_and_tool_calls_keep_their_order():
    out, _ = translate(
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Paris?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": "18C"},
        ],
    )
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "c9", "name": "get_weather", "input": {}},
    ]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_must_be_a_json_object(arguments):
    with pytest.raises(Unsupported, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments"):
        translate(
            messages=[
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
                    ],
                },
            ]
        )


def test_tools_become_input_schemas():
    bare = {"type": "function", "function": {"name": "now", "strict": True}}
    out, dropped = translate(tools=[WEATHER, bare])
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather of a city",
            "input_schema": WEATHER["function"]["parameters"],
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert dropped == ["tools[].function.strict"]
    assert validate_messages_request(out) is None
    with pytest.raises(Unsupported, match=r"tools\[0\] of type 'custom'"):
        translate(tools=[{"type": "custom", "custom": {"name": "x"}}])


@pytest.mark.parametrize(
    "choice,parallel,expected",
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice_mapping(choice, parallel, expected):
    body = {"tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out, dropped = translate(**body)
    assert out.get("tool_choice") == expected and dropped == []
    assert validate_messages_request(out) is None


def test_tool_choice_without_tools_is_dropped_and_named():
    out, dropped = translate(tool_choice="auto", parallel_tool_calls=False)
    assert "tool_choice" not in out and "tools" not in out
    assert dropped == ["parallel_tool_calls", "tool_choice"]


@pytest.mark.parametrize(
    "params,expected",
    [
        ({}, 777),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 60, "max_tokens": 50}, 60),
        ({"max_tokens": 0}, 777),
        ({"max_tokens": True}, 777),
    ],
)
def test_max_tokens_is_always_sent(params, expected):
    assert translate(**params)[0]["max_tokens"] == expected


def test_sampling_stop_and_user_are_translated():
    out, dropped = translate(temperature=1.6, top_p=0.9, stop="END", user="u-42")
    assert out["temperature"] == 1.0 and out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "u-42"}
    assert translate(stop=["a", "b"], temperature=0.3)[0]["stop_sequences"] == ["a", "b"]
    assert translate(temperature=0.3)[0]["temperature"] == 0.3
    assert dropped == [] and validate_messages_request(out) is None


def test_fields_anthropic_does_not_take_are_dropped_and_named():
    out, dropped = translate(
        n=2,
        logprobs=True,
        top_logprobs=3,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.1,
        logit_bias={"1": 2},
        metadata={"team": "x"},
        response_format={"type": "json_object"},
        reasoning_effort="low",
        store=True,
    )
    assert dropped == sorted(
        [
            "n",
            "logprobs",
            "top_logprobs",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "metadata",
            "response_format",
            "reasoning_effort",
            "store",
        ]
    )
    assert not set(dropped) & set(out)
    assert validate_messages_request(out) is None


def test_unknown_roles_are_refused():
    with pytest.raises(Unsupported, match=r"messages\[0\]\.role 'function'"):
        translate(messages=[{"role": "function", "name": "f", "content": "x"}])


# ---- answers --------------------------------------------------------------------------------
#: shaped like the tool-use answer in Anthropic's documentation
TOOL_ANSWER = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-x",
    "content": [
        {"type": "text", "text": "I need to call get_weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "output_tokens": 91,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    },
}


def test_a_tool_use_answer_becomes_tool_calls():
    out = to_openai_response("c", TOOL_ANSWER)
    assert out["id"] == "msg_01Aq9w938a90dw8q" and out["model"] == "claude-sonnet-x"
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I need to call get_weather."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert out["usage"] == {
        "prompt_tokens": 592,
        "completion_tokens": 91,
        "total_tokens": 683,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_text_blocks_are_joined_and_other_blocks_left_out():
    answer = {
        "id": "m",
        "model": "x",
        "stop_reason": "end_turn",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": ", world"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    out = to_openai_response("c", answer)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world"}
    assert out["usage"]["prompt_tokens"] == 3 and out["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0
    }


def test_only_tool_use_gives_null_content():
    out = to_openai_response("c", {**TOOL_ANSWER, "content": TOOL_ANSWER["content"][1:]})
    assert out["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    "stop,finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_stop_reasons(stop, finish):
    assert (
        to_openai_response("c", {**TOOL_ANSWER, "stop_reason": stop})["choices"][0]["finish_reason"] == finish
    )


def test_no_usage_leaves_usage_out():
    assert "usage" not in to_openai_response("c", {k: v for k, v in TOOL_ANSWER.items() if k != "usage"})


@pytest.mark.parametrize("data", [[], "text", {"type": "error", "error": {}}, {"id": "m"}, {"content": "x"}])
def test_malformed_answers(data):
    with pytest.raises(RetryableModelError) as info:
        to_openai_response("claude", data)
    assert info.value.kind == "malformed"


# ---- errors ---------------------------------------------------------------------------------
def _resp(status, body=None, headers=None):
    body = (
        body
        if body is not None
        else {"type": "error", "error": {"type": "x", "message": "SECRET-ECHO sk-ant-123"}}
    )
    return httpx.Response(status, json=body, headers=headers or {})


@pytest.mark.parametrize(
    "status,cls,kind",
    [
        (429, RetryableModelError, "throttled"),
        (529, RetryableModelError, "overloaded"),
        (500, RetryableModelError, "server_error"),
        (503, RetryableModelError, "server_error"),
        (408, RetryableModelError, "http_error"),
        (409, RetryableModelError, "http_error"),
        (401, FatalModelError, "auth"),
        (403, FatalModelError, "auth"),
        (402, FatalModelError, "auth"),
        (400, FatalModelError, "client_error"),
        (404, FatalModelError, "client_error"),
        (413, FatalModelError, "client_error"),
    ],
)
def test_error_mapping(status, cls, kind):
    err = anthropic_status_error("claude", _resp(status, headers={"retry-after": "7"}))
    assert type(err) is cls and err.kind == kind and err.status == status
    assert err.retry_after == (7 if cls is RetryableModelError else None)
    assert "SECRET-ECHO" not in str(err) and "sk-ant" not in str(err) and str(err).startswith("claude: HTTP")


def test_retry_after_as_http_date_is_honoured_on_529():
    date = httpx.Headers({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    err = anthropic_status_error("claude", httpx.Response(529, headers=date))
    assert err.retryable and err.retry_after > 1e9


def test_a_spend_limit_429_is_not_retried():
    body = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "cap",
            "details": {"error_code": "enforced_spend_limit_reached"},
        },
    }
    err = anthropic_status_error("claude", _resp(429, body))
    assert isinstance(err, FatalModelError) and err.kind == "quota"
    plain = anthropic_status_error("claude", httpx.Response(429, text="<html>busy</html>"))
    assert plain.retryable and plain.kind == "throttled"
