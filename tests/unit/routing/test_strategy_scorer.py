"""The scorer strategy against a tiny loopback scoring service over real HTTP."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import pytest
from aiohttp import web

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.routing.base import RoutingContext
from router_stream.routing.scorer import parse_reply
from router_stream.runtime import build_context, build_pipeline
from router_stream.schemas import Request

NAMES = ("cheap", "smart", "expensive")
CANDIDATES = {name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in NAMES}


class Scorer:
    """POST /score answers the queued replies: a JSON value, ``(status, body)``, raw bytes or "hang"."""

    def __init__(self) -> None:
        self.replies: collections.deque[Any] = collections.deque()
        self.bodies: list[Any] = []
        self.auth: list[str | None] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _score(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        self.auth.append(request.headers.get("Authorization"))
        reply = self.replies.popleft() if self.replies else {"scores": {}}
        if reply == "hang":
            await asyncio.sleep(5)
        if isinstance(reply, bytes):
            return web.Response(body=reply, content_type="application/json")
        if isinstance(reply, tuple):
            return web.json_response(reply[1], status=reply[0])
        return web.json_response(reply)

    async def __aenter__(self) -> Scorer:
        app = web.Application()
        app.router.add_post("/score", self._score)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/score"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def scorer():
    async with Scorer() as srv:
        yield srv


def build(url: str, **spec: Any):
    config = parse_config(
        {
            "candidates": CANDIDATES,
            "default": "cheap",
            "strategies": [{"type": "scorer", "url": url, **spec}],
        },
        environ={},
    )
    return config.strategies[0].build(build_context(config))


@pytest.fixture
async def strategy(scorer):
    # 2 s: a loaded 2-core machine can take several hundred ms to answer a loopback call
    s = build(scorer.url, allowed=["cheap", "smart"], min_score=0.5, timeout_ms=2000)
    yield s
    await s.aclose()


def ctx() -> RoutingContext:
    return RoutingContext(key="k", candidates=NAMES)


REQ = Request(request_id="r1", prompt="What is 2+2?", fields={"lang": "en"})


async def test_posts_the_request_and_picks_the_best_allowed_score(strategy, scorer):
    scorer.replies.append({"scores": {"cheap": 0.7, "smart": 0.9}})
    d = await strategy.decide(REQ, ctx())
    assert d.candidate == "smart" and d.cacheable is True
    assert d.detail == {"scores": {"cheap": 0.7, "smart": 0.9}, "score": 0.9}
    assert scorer.bodies[-1] == {
        "request_id": "r1",
        "prompt": "What is 2+2?",
        "fields": {"lang": "en"},
        "candidates": ["cheap", "smart"],
    }
    assert scorer.auth[-1] is None


async def test_non_allowed_and_non_numeric_scores_are_ignored(strategy, scorer):
    scorer.replies.append({"scores": {"expensive": 99, "smart": "high", "CHEAP": 0.6, "nan": float("nan")}})
    d = await strategy.decide(REQ, ctx())
    assert d.candidate == "cheap" and "3 entries ignored" in d.reason


async def test_candidate_reply(strategy, scorer):
    scorer.replies.extend([{"candidate": "Smart"}, {"candidate": "expensive"}, {"candidate": "x" * 500}])
    assert (await strategy.decide(REQ, ctx())).candidate == "smart"
    c = ctx()
    assert await strategy.decide(REQ, c) is None
    assert c.take_note() == "scorer named 'expensive', not an allowed candidate"
    assert await strategy.decide(REQ, c) is None
    assert c.take_note() == "scorer 'candidate' is not a short string"


@pytest.mark.parametrize(
    "reply, why",
    [
        ({"scores": {"cheap": 0.2, "smart": 0.4}}, "best score 0.4 ('smart') is below min_score 0.5"),
        (
            {"scores": {"expensive": 1.0}},
            "scorer gave no usable score (1 entries ignored: not an allowed candidate or not a number)",
        ),
        ({"scores": [1, 2]}, "scorer 'scores' is not an object"),
        ({"verdict": "smart"}, "scorer reply has neither 'scores' nor 'candidate'"),
        (["smart"], "scorer reply is not a JSON object (list)"),
        (b"<html>oops</html>", "scorer reply is not JSON"),
        (b"[" * 60_000, "scorer reply is not JSON"),  # nesting deeper than the JSON parser recurses
        (b'{"candidate": "' + b"a" * 70_000 + b'"}', "scorer reply is larger than 65536 bytes"),
        ((503, {"error": "busy"}), "scorer answered HTTP 503"),
        ("hang", "scorer gave no answer within 2000 ms"),
    ],
)
async def test_bad_replies_abstain_with_a_reason(strategy, scorer, reply, why):
    scorer.replies.append(reply)
    c = ctx()
    assert await strategy.decide(REQ, c) is None
    assert c.take_note() == why


async def test_unreachable_scorer_abstains_and_key_is_sent(monkeypatch, scorer):
    monkeypatch.setenv("RS_SCORER_KEY", "sk-scorer")
    s = build(scorer.url, api_key_env="RS_SCORER_KEY")
    try:
        scorer.replies.append({"scores": {"cheap": 1, "smart": 1, "expensive": 1}})
        d = await s.decide(REQ, ctx())
        assert d.candidate == "cheap"  # ties: the first in candidate order; default allowed: all
        assert scorer.bodies[-1]["candidates"] == list(NAMES) and scorer.auth[-1] == "Bearer sk-scorer"
    finally:
        await s.aclose()
    s = build("http://127.0.0.1:9/score", timeout_ms=500)  # the discard port: refused
    try:
        c = ctx()
        assert await s.decide(REQ, c) is None
        assert c.take_note().startswith("scorer unreachable")
    finally:
        await s.aclose()


async def test_through_the_pipeline(scorer):
    config = parse_config(
        {
            "candidates": CANDIDATES,
            "default": "cheap",
            "strategies": [{"type": "scorer", "name": "q", "url": scorer.url}],
        },
        environ={},
    )
    pipeline = build_pipeline(config)
    try:
        scorer.replies.extend([{"scores": {"expensive": 2.0, "cheap": 1.0}}, {"candidate": "nobody"}])
        routed = await pipeline.route(REQ, ctx())
        assert (routed.candidate, routed.decided_by) == ("expensive", "q")
        assert routed.verdicts[0].detail["score"] == 2.0
        routed = await pipeline.route(REQ, ctx())
        assert (routed.decided_by, routed.verdicts[0].outcome) == ("default", "abstained")
    finally:
        await pipeline.strategies[0].aclose()


def test_parse_reply_unit():
    assert parse_reply({"scores": {"a": 1, "b": True}}, ["a", "b"], None) == (
        "a",
        "scorer scored 'a' highest (1) (1 entries ignored: not an allowed candidate or not a number)",
        {"scores": {"a": 1.0}, "score": 1.0},
    )
    assert parse_reply(json.loads('{"scores": {"a": 1e400}}'), ["a"], None)[0] is None  # inf


def test_config_errors_name_the_field():
    def error(spec) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config({"candidates": CANDIDATES, "default": "cheap", "strategies": [spec]}, environ={})
        return str(info.value)

    assert error({"type": "scorer", "url": "http://s/score", "allowed": ["cheap", "smrt"]}) == (
        "strategies[0].allowed[1]: 'smrt' is not a candidate; did you mean 'smart'? (known: cheap, expensive, smart)"
    )
    assert error({"type": "scorer", "url": "scorer:8080"}) == (
        "strategies[0].url: 'scorer:8080' is not an http(s) URL"
    )
    assert error({"type": "scorer"}) == "strategies[0].url: Field required"


async def test_one_score_and_threshold(scorer):
    s = build(
        scorer.url, threshold=0.6, above="smart", below="cheap", allowed=["cheap", "smart"], timeout_ms=2000
    )
    try:
        scorer.replies.extend(
            [{"score": 0.75}, {"score": 0.6}, {"score": 0.2}, {"score": "high"}, {"scores": {"cheap": 1}}]
        )
        d = await s.decide(REQ, ctx())
        assert (d.candidate, d.reason, d.detail) == (
            "smart",
            "scorer score 0.75 >= threshold 0.6",
            {"score": 0.75, "threshold": 0.6},
        )
        assert (await s.decide(REQ, ctx())).candidate == "smart"  # the boundary goes above
        assert (await s.decide(REQ, ctx())).candidate == "cheap"
        c = ctx()
        assert await s.decide(REQ, c) is None and c.take_note() == "scorer 'score' is not a finite number"
        assert (await s.decide(REQ, ctx())).candidate == "cheap"  # the per-candidate form still works
    finally:
        await s.aclose()


def test_one_score_config_needs_all_three_and_real_candidates():
    def error(spec) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config({"candidates": CANDIDATES, "default": "cheap", "strategies": [spec]}, environ={})
        return str(info.value)

    assert "threshold, above and below go together" in error(
        {"type": "scorer", "url": "http://s/x", "threshold": 0.5, "above": "smart"}
    )
    assert error(
        {"type": "scorer", "url": "http://s/x", "threshold": 0.5, "above": "smrt", "below": "cheap"}
    ) == (
        "strategies[0].above: 'smrt' is not a candidate; did you mean 'smart'? (known: cheap, expensive, smart)"
    )
    # a one-score reply without a configured threshold is not understood
    assert parse_reply({"score": 0.9}, ["cheap"], None)[0] is None
