"""The handler on one record: sticky decisions cached per key, duplicates answered once, the
request-chosen candidate field guarded, poison dead-lettered."""

from __future__ import annotations

import json

from router_stream.config import parse_config
from router_stream.processing.handler import Handler
from router_stream.processing.partition import Source, StateView
from router_stream.providers.resilience import Dispatcher
from router_stream_dev.model_server import ModelServer


def _cfg(**over):
    data = {
        "candidates": {
            "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
            "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
        },
        "default": "cheap",
        "strategies": [{"type": "rules", "rules": [{"when": '"legal" in tags', "then": "smart"}]}],
    }
    data.update(over)
    return data


async def test_handler_caches_decisions_dedups_and_guards_candidate_field():
    async with ModelServer(name="cheap") as cheap, ModelServer(name="smart") as smart:
        data = _cfg(allow_request_candidate_field="model")
        data["candidates"]["cheap"]["base_url"] = cheap.base_url
        data["candidates"]["smart"]["base_url"] = smart.base_url
        config = parse_config(data, environ={})
        from router_stream.runtime import build_pipeline

        dispatcher = Dispatcher(config)
        handler = Handler(config, build_pipeline(config), dispatcher, "w")
        view = StateView(store={})  # a dict satisfies the read protocol

        def src(i, body, key=b"alice"):
            return Source("t", 0, i, key, json.dumps(body).encode())

        first = await handler.handle(src(0, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
        assert first.audit.chosen == "smart" and not first.audit.cache_hit
        second = await handler.handle(src(1, {"request_id": "r2", "prompt": "x"}), view)
        assert second.audit.chosen == "smart" and second.audit.cache_hit  # sticky for alice
        other = await handler.handle(src(2, {"request_id": "r3", "prompt": "x"}, key=b"bob"), view)
        assert other.audit.chosen == "cheap" and other.audit.decided_by == "default"
        calls = cheap.stats()["calls"] + smart.stats()["calls"]
        dup = await handler.handle(src(3, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
        assert dup.response.duplicate and dup.response.output == first.response.output
        assert cheap.stats()["calls"] + smart.stats()["calls"] == calls  # no second model call
        asked = await handler.handle(
            src(4, {"request_id": "r5", "prompt": "x", "fields": {"model": "smart"}}, key=b"carol"), view
        )
        assert asked.audit.chosen == "smart" and asked.audit.decided_by == "request"
        bogus = await handler.handle(
            src(5, {"request_id": "r6", "prompt": "x", "fields": {"model": "gpt-9"}}, key=b"dave"), view
        )
        assert bogus.audit.chosen == "cheap" and bogus.audit.verdicts[0].outcome == "miss"
        poison = await handler.handle(Source("t", 0, 6, None, b"{nope"), view)
        assert poison.dead_letter.reason == "not_json" and poison.response is None
        await dispatcher.aclose()
