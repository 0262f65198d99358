"""A request record is an OpenAI chat-completions body plus the router's fields (schema v2)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from router_stream.config import parse_config
from router_stream.processing.handler import Handler, request_override
from router_stream.processing.intake import Poison, classify
from router_stream.processing.partition import Source, StateView
from router_stream.processing.request_notes import audit_notes
from router_stream.providers.base import (
    IMAGE_TOKENS,
    IMAGE_TOKENS_LOW,
    MESSAGE_TOKENS,
    Completion,
    estimate_prompt_tokens,
    estimate_tokens,
)
from router_stream.providers.call_result import CallResult
from router_stream.runtime import build_pipeline
from router_stream.schemas import CHAT_COMPLETION_FIELDS, NOT_SENT, SCHEMA_VERSION, Request, Usage

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
AUDIO = {
    "type": "input_audio",
    "input_audio": {"data": base64.b64encode(b"\0" * 16000).decode(), "format": "wav"},
}
FILE = {
    "type": "file",
    "file": {
        "filename": "a.pdf",
        "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF" * 400).decode(),
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
}


def req(**kw: Any) -> Request:
    return Request.model_validate({"request_id": "r1", **kw})


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


# ---------------------------------------------------------------- messages
@pytest.mark.parametrize(
    "part",
    [IMAGE, AUDIO, FILE, {"type": "text", "text": "hi"}, {"type": "a_part_type_from_next_year", "x": 1}],
)
def test_each_content_part_type_is_accepted_and_sent_as_given(part: dict[str, Any]) -> None:
    r = req(messages=[user({"type": "text", "text": "Describe this."}, part)])
    assert r.chat_messages() == [
        {"role": "user", "content": [{"type": "text", "text": "Describe this."}, part]}
    ]


def test_routing_text_is_the_text_parts_only() -> None:
    r = req(
        messages=[
            {"role": "system", "content": "Be brief."},
            user({"type": "text", "text": "Describe"}, IMAGE, AUDIO, FILE, {"type": "text", "text": "this"}),
        ]
    )
    assert r.text() == "Be brief.\nDescribe\nthis"
    assert "base64" not in r.text() and "http" not in r.text()


def test_a_tool_loop_conversation_is_accepted() -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
    ]
    r = req(messages=messages, tools=TOOLS)
    sent = r.chat_messages()
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    assert sent[2] == messages[2]
    assert r.call_params() == {"tools": TOOLS}
    # an assistant message may leave content out altogether; it is not invented on the way out
    r2 = req(messages=[messages[0], {"role": "assistant", "tool_calls": [TOOL_CALL]}, messages[2]])
    assert "content" not in r2.chat_messages()[1]
    assert r.text() == 'Weather in Oslo?\n{"temp": 3}'


@pytest.mark.parametrize(
    "message,where",
    [
        ({"role": "user", "content": None}, "needs 'content'"),
        ({"role": "user"}, "needs 'content'"),
        ({"role": "tool", "tool_call_id": "c", "content": None}, "needs 'content'"),
        ({"content": "x"}, "Field required"),
        ({"role": "user", "content": [{"text": "no type"}]}, "needs a 'type'"),
        ({"role": "user", "content": [{"type": "text"}]}, "without a 'text' string"),
        ({"role": "user", "content": 5}, "content"),
    ],
)
def test_what_the_router_reads_is_validated(message: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        req(messages=[message])
    out = classify(json.dumps({"request_id": "r1", "messages": [message]}).encode())
    assert isinstance(out, Poison) and out.reason == "invalid_request" and out.request_id == "r1"


# ---------------------------------------------------------------- top-level fields
def test_chat_completion_fields_at_top_level_go_to_the_model() -> None:
    body = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 30,
        "max_completion_tokens": 40,
        "stop": ["\n"],
        "seed": 7,
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "u-1",
        "metadata": {"a": "b"},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logit_bias": {"50256": -100},
        "store": False,
        "reasoning_effort": "low",
        "modalities": ["text"],
        "service_tier": "auto",
        "prediction": {"type": "content", "content": "x"},
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}},
        },
    }
    assert set(body) <= CHAT_COMPLETION_FIELDS
    r = req(prompt="Say hi.", **body)
    assert r.call_params() == body
    assert r.unknown_fields() == [] and audit_notes(r, None) == (None, None)
    # the example: {"request_id": "r", "prompt": "Say hi.", "temperature": 0.2} is a request, not a dead letter
    out = classify(b'{"request_id": "r", "prompt": "Say hi.", "temperature": 0.2}')
    assert isinstance(out, Request) and out.call_params() == {"temperature": 0.2}


def test_a_field_both_top_level_and_in_params_is_sent_with_the_top_level_value() -> None:
    r = req(prompt="x", temperature=0.1, params={"temperature": 0.9, "max_tokens": 5})
    assert r.call_params() == {"temperature": 0.1, "max_tokens": 5}
    ignored, notes = audit_notes(r, None)
    assert ignored == ["params.temperature"]
    assert notes == ["params.temperature was overridden by the top-level temperature"]


def test_unknown_top_level_fields_are_ignored_named_and_never_sent() -> None:
    r = req(prompt="x", temperature=0.3, x_app_trace={"id": 1}, futureField=True)
    assert r.call_params() == {"temperature": 0.3}
    assert r.unknown_fields() == ["x_app_trace", "futureField"]
    ignored, notes = audit_notes(r, None)
    assert ignored == ["x_app_trace", "futureField"] and notes is not None and "x_app_trace" in notes[0]
    # the door takes it (readers ignore what they do not know) and a round trip keeps it
    out = classify(json.dumps({"request_id": "r1", "prompt": "x", "x_app_trace": {"id": 1}}).encode())
    assert isinstance(out, Request) and out.unknown_fields() == ["x_app_trace"]
    again = Request.model_validate(out.model_dump(mode="json", exclude_none=True))
    assert again == out


def test_model_and_stream_are_never_sent_and_the_audit_says_why() -> None:
    r = req(
        prompt="x",
        model="gpt-4o",
        stream=True,
        stream_options={"include_usage": True},
        params={"stream": True, "model": "m2", "messages": []},
    )
    assert r.call_params() == {}
    ignored, notes = audit_notes(r, None)
    assert ignored == [
        "params.stream",
        "params.model",
        "params.messages",
        "model",
        "stream",
        "stream_options",
    ]
    assert notes is not None and any("'gpt-4o' was not used" in n for n in notes)
    assert any("stream: true was answered whole" in n for n in notes)
    assert audit_notes(req(prompt="x", stream=False), None) == (["stream"], None)


def _config(**extra: Any):
    return parse_config(
        {
            "candidates": {
                "cheap": {"base_url": "http://127.0.0.1:1", "model": "c"},
                "strong": {"base_url": "http://127.0.0.1:1", "model": "s"},
            },
            "default": "cheap",
            **extra,
        },
        environ={},
    )


def test_a_top_level_model_names_a_candidate_only_when_config_opts_in() -> None:
    off = _config()
    assert request_override(off, req(prompt="x", model="strong")) is None
    on = _config(allow_request_candidate_field="model")
    chose = request_override(on, req(prompt="x", model="strong"))
    assert chose is not None and (chose.outcome, chose.candidate, chose.reason) == (
        "chose",
        "strong",
        "model allowed by config",
    )
    assert audit_notes(req(prompt="x", model="strong"), "model") == (None, None)  # used: not ignored
    miss = request_override(on, req(prompt="x", model="gpt-4o"))
    assert miss is not None and miss.outcome == "miss" and miss.reason == "model names no candidate"
    # fields.model, the older spelling, wins over the body's model
    both = request_override(on, req(prompt="x", model="strong", fields={"model": "cheap"}))
    assert both is not None and both.candidate == "cheap" and both.reason == "fields.model allowed by config"
    assert audit_notes(req(prompt="x", model="strong", fields={"model": "cheap"}), "model")[0] == ["model"]
    # another field name: the body's model is ignored
    other = _config(allow_request_candidate_field="tier")
    assert request_override(other, req(prompt="x", model="strong")) is None


# ---------------------------------------------------------------- versions
def test_version_one_records_are_still_read_and_new_ones_say_two() -> None:
    assert SCHEMA_VERSION == 2
    old = classify(
        b'{"schema_version": 1, "request_id": "r", "messages": [{"role": "user", "content": "hi"}]}'
    )
    assert isinstance(old, Request) and old.schema_version == 1 and old.text() == "hi"
    new = classify(json.dumps({"schema_version": 2, "request_id": "r", "messages": [user(IMAGE)]}).encode())
    assert isinstance(new, Request)
    too_new = classify(b'{"schema_version": 3, "request_id": "r", "prompt": "hi"}')
    assert isinstance(too_new, Poison) and too_new.reason == "unsupported_schema_version"


# ---------------------------------------------------------------- the token estimate
def test_the_estimate_counts_images_audio_files_tools_and_tool_calls_by_the_documented_rule() -> None:
    text_only = [{"role": "user", "content": "x" * 40}]
    assert estimate_prompt_tokens(text_only) == MESSAGE_TOKENS + 10
    high = {"type": "image_url", "image_url": {"url": "u"}}
    assert estimate_prompt_tokens([user(IMAGE)]) == MESSAGE_TOKENS + IMAGE_TOKENS_LOW == 4 + 85
    assert estimate_prompt_tokens([user(high)]) == MESSAGE_TOKENS + IMAGE_TOKENS == 4 + 765
    assert estimate_prompt_tokens([user(AUDIO)]) == MESSAGE_TOKENS + 10  # 16,000 bytes ≈ 1 s ≈ 10 tokens
    assert estimate_prompt_tokens([user(FILE)]) == MESSAGE_TOKENS + 1600 // 16
    assert estimate_prompt_tokens([user({"type": "file", "file": {"file_id": "file-1"}})]) == 4 + 85
    call = [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]
    assert estimate_prompt_tokens(call) == MESSAGE_TOKENS + estimate_tokens(
        json.dumps([TOOL_CALL], separators=(",", ":"))
    )
    with_tools = estimate_prompt_tokens(text_only, {"tools": TOOLS, "temperature": 0})
    assert with_tools == MESSAGE_TOKENS + 10 + estimate_tokens(json.dumps(TOOLS, separators=(",", ":")))
    # an estimate never raises on odd but valid shapes
    odd = [
        user({"type": "image_url", "image_url": "not an object"}, {"type": "input_audio"}, {"type": "file"})
    ]
    assert estimate_prompt_tokens(odd) == 4 + 765 + 1 + 85


def test_the_door_refuses_a_request_whose_images_exceed_every_context_window() -> None:
    body = {
        "request_id": "r1",
        "messages": [user({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}})],
    }
    assert isinstance(classify(json.dumps(body).encode(), max_prompt_tokens=1000), Request)
    out = classify(json.dumps(body).encode(), max_prompt_tokens=700)
    assert isinstance(out, Poison) and out.reason == "context_window"
    with_tools = {"request_id": "r1", "prompt": "hi", "tools": TOOLS * 40}
    out = classify(json.dumps(with_tools).encode(), max_prompt_tokens=700)
    assert isinstance(out, Poison) and out.reason == "context_window"


# ---------------------------------------------------------------- through the handler
class _Dispatcher:
    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        self.requests: list[Request] = []

    async def call(self, request: Request, chosen: str, deadline_at: float) -> CallResult:
        self.requests.append(request)
        return CallResult(completion=self.completion, served_by=chosen)


def test_the_handler_puts_the_whole_answer_and_the_ignored_fields_in_the_records() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL], "refusal": None}
    completion = Completion(
        text="",
        provider_model="c-1",
        latency_ms=1.0,
        message=message,
        finish_reason="tool_calls",
        response_id="chatcmpl-1",
        usage=Usage(
            prompt_tokens=5, completion_tokens=3, total_tokens=8, prompt_tokens_details={"cached_tokens": 2}
        ),
    )
    config = _config(cache={"dedup_window_s": 60})
    dispatcher = _Dispatcher(completion)
    handler = Handler(config, build_pipeline(config), dispatcher, "w")
    value = json.dumps(
        {
            "request_id": "r1",
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": TOOLS,
            "stream": True,
            "x_trace": 1,
        }
    ).encode()
    view = StateView({})  # type: ignore[arg-type]
    out = asyncio.run(handler.handle(Source("requests", 0, 0, b"k", value), view))
    resp, audit = out.response, out.audit
    assert resp is not None and audit is not None and resp.error is None
    assert resp.output is None and resp.message == message and resp.finish_reason == "tool_calls"
    assert resp.response_id == "chatcmpl-1" and resp.usage is not None
    assert resp.usage.prompt_tokens_details == {"cached_tokens": 2} and resp.schema_version == 2
    assert audit.ignored_fields == ["x_trace", "stream"] and audit.notes is not None
    assert dispatcher.requests[0].call_params() == {"tools": TOOLS}
    # a repeat is answered from the stored first answer, tool calls included
    again = asyncio.run(handler.handle(Source("requests", 0, 1, b"k", value), view))
    assert again.response is not None and again.response.duplicate
    assert again.response.message == message and again.response.finish_reason == "tool_calls"
    assert again.audit is not None and again.audit.ignored_fields == ["x_trace", "stream"]
    assert len(dispatcher.requests) == 1


def test_a_text_only_completion_still_gets_a_message_a_consumer_can_append() -> None:
    fields = Completion(text="hello", provider_model="m", usage=Usage(), latency_ms=1.0).answer_fields()
    assert fields["output"] == "hello" and fields["message"] == {"role": "assistant", "content": "hello"}


def test_notes_are_left_out_of_the_audit_json_when_there_are_none() -> None:
    from router_stream.schemas import Audit

    ignored, notes = audit_notes(req(prompt="x", params={"temperature": 0.5}), None)
    assert (ignored, notes) == (None, None)
    record = json.loads(
        Audit(request_id="r1", decided_by="default", ignored_fields=ignored, notes=notes).model_dump_json(
            exclude_none=True
        )
    )
    assert "ignored_fields" not in record and "notes" not in record
    assert set(NOT_SENT) == {"model", "messages", "stream", "stream_options"}


def test_explain_says_what_the_audit_would_say_about_ignored_fields() -> None:
    from router_stream.explain import explain

    value = json.dumps(
        {"request_id": "r1", "prompt": "hi", "model": "gpt-4o", "stream": True, "x_app": 1}
    ).encode()
    result = asyncio.run(explain(_config(), value, key="k"))
    assert any(n.startswith("unknown top-level field(s) ignored") and "x_app" in n for n in result.notes)
    assert any("'gpt-4o' was not used" in n for n in result.notes)
    assert any("answered whole" in n for n in result.notes)
