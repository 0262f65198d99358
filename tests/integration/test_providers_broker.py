"""An ``anthropic`` and an ``azure-openai`` candidate answering through a worker on the real broker.

Both point at the loopback server's dialects (Anthropic's ``/v1/messages``, Azure's deployment
URL), which check each request as the providers document it; the key reaches them in the
``x-api-key`` / ``api-key`` header and nowhere else (records, worker log).
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from router_stream.schemas import SCHEMA_VERSION
from router_stream_dev.dialects import fingerprint
from router_stream_dev.harness import produce, request_value
from router_stream_dev.model_server import ModelServer

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

pytestmark = pytest.mark.kafka

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RULES = [
    {
        "type": "rules",
        "name": "by-tag",
        "rules": [{"when": '"claude" in tags', "then": "claude"}, {"when": '"gw" in tags', "then": "gw"}],
    }
]


def test_anthropic_and_azure_candidates_answer_end_to_end(kafka_bootstrap, prefix, tmp_path):
    secret = "sk-test-" + os.urandom(12).hex()
    gw_token, gw_key = "Bearer gw-" + os.urandom(12).hex(), "gwkey-" + os.urandom(12).hex()
    server = ModelServer("loop", api_key=secret)
    base = server.start_in_thread().removesuffix("/v1")
    try:
        config = make_config(
            bootstrap=kafka_bootstrap,
            prefix=prefix,
            state_dir=tmp_path / "state",
            default="azure",
            candidates={"claude": base, "azure": base, "gw": f"{base}/gateway/v1"},
            strategies=RULES,
            candidate_extra={
                "claude": {
                    "api": "anthropic",
                    "model": "claude-x",
                    "api_key_env": "LOOP_KEY",
                    "default_max_tokens": 256,
                },
                "azure": {
                    "api": "azure-openai",
                    "model": "gpt-4o",
                    "deployment": "prod-4o",
                    "api_version": "2024-10-21",
                    "api_key_env": "LOOP_KEY",
                },
                "gw": {
                    "model": "gw-model",
                    "headers": {"X-Team": "search", "Authorization": {"env": "GW_TOKEN"}},
                    "query": {"team": "a", "key": {"env": "GW_KEY"}},
                },
            },
        )
        setup_topics(config, partitions=2)
        worker = start_worker(
            tmp_path, config, env={"LOOP_KEY": secret, "GW_TOKEN": gw_token, "GW_KEY": gw_key}
        )
        records = [(b"g", request_value("gw", "question for the gateway", tags=["gw"]))]
        records += [
            (f"k{i}".encode(), request_value(f"c{i}", f"question {i} for claude", tags=["claude"]))
            for i in range(10)
        ]
        records += [(f"az{i}".encode(), request_value(f"a{i}", f"question {i} for azure")) for i in range(10)]
        records.append(
            (
                b"t",
                request_value(
                    "tool",
                    "Weather in Paris?",
                    tags=["claude"],
                    params={"tools": [WEATHER], "seed": 7, "max_tokens": 100},
                ),
            )
        )
        try:
            asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], records))
            responses = read(config, "responses", expect=len(records))
            audits = read(config, "audit", expect=len(records))
        finally:
            worker.terminate()
        stats = server.dialects.stats()
    finally:
        server.stop()

    expected = {f"c{i}" for i in range(10)} | {f"a{i}" for i in range(10)} | {"tool", "gw"}
    assert_exactly_once(ids_of(responses), expected, "responses")
    assert_exactly_once(ids_of(audits), expected, "audit")
    by_id = {r["request_id"]: r for r in map(json.loads, (r.value for r in responses))}
    audit = {a["request_id"]: a for a in map(json.loads, (a.value for a in audits))}
    for i in range(10):
        assert by_id[f"c{i}"]["candidate"] == "claude" and by_id[f"c{i}"]["provider_model"] == "claude-x"
        assert by_id[f"c{i}"]["output"] == f"[loop] answer to: question {i} for claude"
        assert by_id[f"a{i}"]["candidate"] == "azure" and by_id[f"a{i}"]["provider_model"] == "prod-4o"
        assert by_id[f"a{i}"]["output"] == f"[loop] answer to: question {i} for azure"
    assert stats["anthropic_calls"] == 11 and stats["azure_calls"] == 10 and stats["rejected"] == 0
    assert stats["last_azure"]["deployment"] == "prod-4o" and "model" not in stats["last_azure"]["body"]

    # the tool call went through Anthropic natively: tools as input_schema, seed dropped and audited
    tool_audit = audit["tool"]
    assert tool_audit["served_by"] == "claude" and tool_audit["attempts"][0]["outcome"] == "ok"
    assert tool_audit["attempts"][0]["dropped_params"] == ["seed"]
    assert (
        "dropped_params" not in audit["c0"]["attempts"][0]
        and "dropped_params" not in audit["a0"]["attempts"][0]
    )
    sent = next(b for b in stats["anthropic_bodies"] if b.get("tools"))
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather of a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert sent["max_tokens"] == 100 and "seed" not in sent
    assert {b["max_tokens"] for b in stats["anthropic_bodies"] if not b.get("tools")} == {256}
    tool = by_id["tool"]
    if "message" in tool:  # the response record carries the whole message (issue 15 part 2): the call itself
        call = tool["message"]["tool_calls"][0]
        assert tool["finish_reason"] == "tool_calls" and call["function"]["name"] == "get_weather"
        assert list(json.loads(call["function"]["arguments"])) == ["city"]
    else:  # text-only response records: the text block the loopback answer puts before its tool_use
        assert tool["output"] == "[loop] answer to: Weather in Paris?"

    # the gateway got its extra headers and query parameters, secrets from the worker's env
    assert (
        by_id["gw"]["output"] == "[loop] answer to: question for the gateway" and stats["gateway_calls"] == 1
    )
    assert stats["last_gateway"]["query"] == {"team": "a", "key": fingerprint(gw_key)}

    # the keys went to the providers in their own headers, and nowhere else
    assert fingerprint(secret) in stats["last_headers"].values()
    blob = b"".join(r.value for r in responses + audits).decode() + worker.log_path.read_text()
    for value in (secret, gw_token, gw_key, gw_token.split()[1]):
        assert value not in blob


@pytest.mark.skipif(
    SCHEMA_VERSION < 2,
    reason="needs the chat-completions request/response contract (schema v2, "
    "issue 15 part 2): an assistant turn with content null",
)
def test_a_tool_loop_through_kafka_on_an_anthropic_candidate(kafka_bootstrap, prefix, tmp_path):
    """Turn 1 asks; Claude (the loopback Messages API) calls the tool; the consumer appends the
    message it got and the tool's result; turn 2 is a valid Messages API request (each
    tool_result answers a tool_use of the previous turn: the server checks) and gets an answer."""
    secret = "sk-test-" + os.urandom(12).hex()
    server = ModelServer("loop", api_key=secret)
    base = server.start_in_thread().removesuffix("/v1")
    try:
        config = make_config(
            bootstrap=kafka_bootstrap,
            prefix=prefix,
            state_dir=tmp_path / "state",
            candidates={"claude": base},
            candidate_extra={"claude": {"api": "anthropic", "model": "claude-x", "api_key_env": "LOOP_KEY"}},
        )
        setup_topics(config, partitions=1)
        worker = start_worker(tmp_path, config, env={"LOOP_KEY": secret})
        topic = config["topics"]["requests"]
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        try:
            asyncio.run(
                produce(
                    kafka_bootstrap,
                    topic,
                    [
                        (
                            b"u",
                            json.dumps(
                                {"request_id": "turn-1", "messages": messages, "tools": [WEATHER]}
                            ).encode(),
                        )
                    ],
                )
            )
            first = json.loads(read(config, "responses", expect=1)[0].value)
            assert first["finish_reason"] == "tool_calls", first
            (call,) = first["message"]["tool_calls"]
            assert call["function"]["name"] == "get_weather"
            messages += [
                first["message"],
                {"role": "tool", "tool_call_id": call["id"], "content": "18C, sunny"},
            ]
            asyncio.run(
                produce(
                    kafka_bootstrap,
                    topic,
                    [
                        (
                            b"u",
                            json.dumps(
                                {"request_id": "turn-2", "messages": messages, "tools": [WEATHER]}
                            ).encode(),
                        )
                    ],
                )
            )
            second = next(
                r
                for r in map(json.loads, (r.value for r in read(config, "responses", expect=2)))
                if r["request_id"] == "turn-2"
            )
        finally:
            worker.terminate()
        stats = server.dialects.stats()
    finally:
        server.stop()
    assert second["finish_reason"] == "stop" and second["output"].startswith("[loop] ")
    assert stats["rejected"] == 0 and stats["anthropic_calls"] == 2
    sent = stats["last_anthropic_body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call["id"],
        "name": "get_weather",
        "input": json.loads(call["function"]["arguments"]),
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call["id"], "content": "18C, sunny"}]
