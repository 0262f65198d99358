"""Real traffic in, whole answers out, on a real broker: chat-completions bodies as requests,
the assistant message as the answer, and a tool loop that runs through Kafka."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from router_stream_dev.harness import produce

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _config(kafka_bootstrap, model_servers, prefix, tmp_path, **kw):
    return make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        **kw,
    )


def _send(config: dict[str, Any], *bodies: dict[str, Any]) -> None:
    records = [(b"conv-1", json.dumps(b).encode()) for b in bodies]
    asyncio.run(produce(config["kafka"]["bootstrap_servers"], config["topics"]["requests"], records))


def _by_id(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {json.loads(r.value)["request_id"]: json.loads(r.value) for r in records}


def test_a_tool_loop_runs_through_kafka(kafka_bootstrap, model_servers, prefix, tmp_path):
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path)
    setup_topics(config, partitions=1)
    worker = start_worker(tmp_path, config)
    try:
        # turn 1: the application's chat-completions body, plus a request_id
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You answer weather questions."},
            {"role": "user", "content": "What is the weather in Oslo?"},
        ]
        _send(
            config,
            {
                "request_id": "turn-1",
                "model": "gpt-4o",
                "messages": messages,
                "tools": TOOLS,
                "tool_choice": "auto",
                "temperature": 0,
            },
        )
        first = _by_id(read(config, "responses", expect=1))["turn-1"]
        assert first.get("error") is None, first
        assert first["schema_version"] == 2 and first["finish_reason"] == "tool_calls"
        assert "output" not in first  # no text: the model asked for a tool (null fields are left out)
        message = first["message"]
        assert message["role"] == "assistant" and message["content"] is None
        (call,) = message["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "What is the weather in Oslo?"}
        assert first["response_id"].startswith("chatcmpl-") and first["usage"]["completion_tokens"] > 0

        # turn 2: the consumer appends the message as it came, and the tool's result
        messages += [
            message,
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 3, "sky": "rain"}'},
        ]
        _send(config, {"request_id": "turn-2", "model": "gpt-4o", "messages": messages, "tools": TOOLS})
        responses = _by_id(read(config, "responses", expect=2))
        audits = _by_id(read(config, "audit", expect=2))
    finally:
        worker.terminate()
    second = responses["turn-2"]
    assert second.get("error") is None, second
    assert second["output"] == '[cheap] tool result: {"temp_c": 3, "sky": "rain"}'
    assert second["message"] == {"role": "assistant", "content": second["output"]}
    assert second["finish_reason"] == "stop"
    # the model received the conversation exactly as the consumer built it, tool call and all
    body = model_servers["cheap"].received_bodies()[-1]
    assert body["messages"] == messages and body["tools"] == TOOLS and body["model"] == "cheap-model"
    # the body's model named no candidate: ignored, and the audit says so
    assert audits["turn-2"]["ignored_fields"] == ["model"]
    assert "'gpt-4o' was not used" in audits["turn-2"]["notes"][0]


PARTS = {
    "text": {"type": "text", "text": "and be brief"},
    "image_url": {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
    },
    "input_audio": {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"RIFF" + b"\0" * 400).decode(), "format": "wav"},
    },
    "file": {
        "type": "file",
        "file": {
            "filename": "notes.pdf",
            "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4").decode(),
        },
    },
}


def test_every_content_part_type_and_unknown_fields_on_the_real_broker(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    config = _config(kafka_bootstrap, model_servers, prefix, tmp_path)
    setup_topics(config, partitions=2)
    worker = start_worker(tmp_path, config)
    bodies = [
        {
            "request_id": f"part-{kind}",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"Look at this {kind}"}, part]}
            ],
        }
        for kind, part in PARTS.items()
    ]
    bodies.append(
        {
            "request_id": "extras",
            "prompt": "Say hi.",
            "temperature": 0.2,
            "seed": 7,
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "x_client_trace": {"span": "abc"},
            "params": {"temperature": 0.9, "max_tokens": 40},
        }
    )
    try:
        _send(config, *bodies)
        expected = {b["request_id"] for b in bodies}
        responses = read(config, "responses", expect=len(bodies))
        audits = read(config, "audit", expect=len(bodies))
        dead = read(config, "dead_letter", idle=1)
    finally:
        worker.terminate()
    assert not dead, [json.loads(d.value) for d in dead]
    assert_exactly_once(ids_of(responses), expected, "responses")
    assert_exactly_once(ids_of(audits), expected, "audit")
    by_id, audit_by_id = _by_id(responses), _by_id(audits)
    for kind in PARTS:
        r = by_id[f"part-{kind}"]
        assert r.get("error") is None, r
        shown = "and be brief" if kind == "text" else f"[{kind}]"
        assert r["output"] == f"[cheap] answer to: Look at this {kind} {shown}", r
        assert r["message"]["content"] == r["output"] and r["finish_reason"] == "stop"
    received = model_servers["cheap"].received_bodies()
    sent_parts = {
        m["content"][1]["type"]: m["content"][1]
        for b in received
        for m in b["messages"]
        if isinstance(m.get("content"), list)
    }
    assert sent_parts == PARTS  # every part reached the model exactly as produced

    extras = by_id["extras"]
    assert len(extras["choices"]) == 2 and extras["output"] == extras["choices"][0]["message"]["content"]
    body = next(b for b in received if b["messages"] == [{"role": "user", "content": "Say hi."}])
    assert body["temperature"] == 0.2 and body["max_tokens"] == 40 and body["seed"] == 7 and body["n"] == 2
    assert not {"x_client_trace", "stream", "stream_options", "params", "request_id"} & set(body)
    audit = audit_by_id["extras"]
    assert audit["ignored_fields"] == ["x_client_trace", "params.temperature", "stream", "stream_options"]
    assert any("answered whole" in n for n in audit["notes"])
    assert "ignored_fields" not in audit_by_id["part-text"]  # nothing ignored: nothing said


def test_micro_batching_carries_the_answer_and_sends_tool_requests_alone(
    kafka_bootstrap, model_servers, prefix, tmp_path
):
    config = _config(
        kafka_bootstrap,
        model_servers,
        prefix,
        tmp_path,
        candidate_extra={"cheap": {"batch": {"size": 4, "timeout_ms": 300}}},
    )
    setup_topics(config, partitions=1)
    worker = start_worker(tmp_path, config)
    plain = [{"request_id": f"p{i}", "prompt": f"question {i}"} for i in range(8)]
    tools = [
        {"request_id": f"t{i}", "messages": [{"role": "user", "content": f"weather {i}"}], "tools": TOOLS}
        for i in range(2)
    ]
    try:
        _send(config, *plain, *tools)
        responses = read(config, "responses", expect=10)
    finally:
        worker.terminate()
    assert_exactly_once(ids_of(responses), {b["request_id"] for b in plain + tools}, "responses")
    by_id = _by_id(responses)
    for i in range(8):
        r = by_id[f"p{i}"]
        assert r["output"] == f"[cheap] answer to: question {i}", r
        assert r["message"] == {"role": "assistant", "content": r["output"]} and r["finish_reason"] == "stop"
        assert r["batch"]["answered"] == "batch" and r["response_id"].startswith("chatcmpl-")
    assert model_servers["cheap"].stats()["batched_records"] == 8
    for i in range(2):
        r = by_id[f"t{i}"]
        assert "batch" not in r and "output" not in r and r["finish_reason"] == "tool_calls", r
        assert r["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
