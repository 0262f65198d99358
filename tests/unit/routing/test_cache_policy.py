"""Cache scope by expression, per-strategy cache settings (enabled, ttl_s), old cached entries."""

from __future__ import annotations

import json

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.processing import handler as handler_mod
from router_stream.processing.handler import Handler
from router_stream.processing.janitor import expired_keys
from router_stream.processing.partition import Source, StateView
from router_stream.routing.base import Decision, RoutingContext
from router_stream.routing.caching import CachePolicy, StrategyCache, cache_policy
from router_stream.routing.pipeline import Pipeline
from router_stream.runtime import build_pipeline
from router_stream.schemas import CachedDecision, Request
from router_stream.state.store import key_state_key

from ..fakes import InstantDispatcher

T0 = 1_800_000_000_000


def _data(strategy_cache=None, **cache):
    rules = {"type": "rules", "rules": [{"when": '"legal" in tags', "then": "smart"}]}
    if strategy_cache is not None:
        rules["cache"] = strategy_cache
    return {
        "candidates": {
            "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
            "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
        },
        "default": "cheap",
        "strategies": [rules],
        "cache": cache,
    }


def _handler(data) -> Handler:
    config = parse_config(data, environ={})
    return Handler(config, build_pipeline(config), InstantDispatcher(), "w")


def _src(offset: int, body: dict, key: bytes | None = b"alice") -> Source:
    return Source("t", 0, offset, key, json.dumps(body).encode())


@pytest.fixture
def clock(monkeypatch):
    """The handler's clock (``received``), set by the test."""
    now = [T0]
    monkeypatch.setattr(handler_mod, "now_ms", lambda: now[0])
    return now


# ---------------------------------------------------------------- scope expression
@pytest.mark.parametrize(
    "expr,fields,key,expected",
    [
        ('get(fields, "tenant", key)', {"tenant": "acme"}, b"alice", "acme"),
        ('get(fields, "tenant", key)', {}, b"alice", "alice"),  # no field: the default (key)
        ("fields.conversation_id", {"conversation_id": "c-42"}, b"alice", "c-42"),
        ("fields.conversation_id", {}, b"alice", "alice"),  # fails on this request: Kafka key
        ("fields.conversation_id", {"conversation_id": 7}, b"alice", "7"),  # an integer is a key
        ("fields.conversation_id", {"conversation_id": ""}, b"alice", "alice"),  # empty: Kafka key
        ("fields.conversation_id", {"conversation_id": None}, b"alice", "alice"),
        ("fields.conversation_id", {"conversation_id": True}, b"alice", "alice"),
        ("fields.conversation_id", {"conversation_id": ["a"]}, b"alice", "alice"),  # not a scalar
        ("fields.conversation_id", {"conversation_id": {"a": 1}}, b"alice", "alice"),
        ("fields.conversation_id", {}, None, "request:r1"),  # no Kafka key either
        (
            'lower(get(fields, "tenant", "")) + ":" + get(fields, "user", "")',
            {"tenant": "ACME", "user": "u1"},
            b"k",
            "acme:u1",
        ),
        ("key", {}, b"bob", "bob"),
    ],
)
def test_scope_expression_keys(expr, fields, key, expected):
    handler = _handler(_data(scope="expression", scope_expression=expr))
    request = Request(request_id="r1", prompt="x", fields=fields)
    assert handler.scope_key(_src(0, {}, key=key), request) == expected
    assert handler.scope_key(_src(0, {}, key=key), None) == (key.decode() if key else "offset:0:0")


async def test_scope_expression_shares_a_sticky_decision_between_kafka_keys(clock):
    handler = _handler(_data(scope="expression", scope_expression='get(fields, "tenant", key)'))
    view = StateView(store={})
    first = await handler.handle(
        _src(
            0,
            {"request_id": "r1", "prompt": "x", "tags": ["legal"], "fields": {"tenant": "acme"}},
            key=b"alice",
        ),
        view,
    )
    assert first.audit.key == "acme" and first.audit.chosen == "smart" and not first.audit.cache_hit
    second = await handler.handle(
        _src(1, {"request_id": "r2", "prompt": "x", "fields": {"tenant": "acme"}}, key=b"bob"), view
    )
    assert second.audit.key == "acme" and second.audit.chosen == "smart" and second.audit.cache_hit
    other = await handler.handle(_src(2, {"request_id": "r3", "prompt": "x"}, key=b"bob"), view)
    assert other.audit.key == "bob" and other.audit.chosen == "cheap" and not other.audit.cache_hit
    assert key_state_key("acme") in view.pending and key_state_key("bob") in view.pending


def test_scope_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"cache\.scope_expression: unknown function 'nope'"):
        parse_config(_data(scope="expression", scope_expression="nope(fields)"), environ={})
    with pytest.raises(ConfigError, match=r"cache\.scope_expression: invalid expression"):
        parse_config(_data(scope="expression", scope_expression="fields."), environ={})
    with pytest.raises(ConfigError, match=r"cache\.scope_expression: unknown name 'os'"):
        parse_config(_data(scope="expression", scope_expression="os.environ"), environ={})
    with pytest.raises(ConfigError, match=r"cache: scope 'expression' needs scope_expression"):
        parse_config(_data(scope="expression"), environ={})
    with pytest.raises(ConfigError, match=r"cache\.scope"):
        parse_config(_data(scope="tenant"), environ={})


# ---------------------------------------------------------------- per-strategy enabled / ttl_s
async def test_strategy_cache_disabled_decisions_are_not_sticky(clock):
    handler = _handler(_data(strategy_cache={"enabled": False}))
    view = StateView(store={})
    first = await handler.handle(_src(0, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
    assert first.audit.chosen == "smart" and not first.audit.cache_hit
    assert json.loads(view.get(key_state_key("alice")))["decision"] is None
    second = await handler.handle(_src(1, {"request_id": "r2", "prompt": "x"}), view)
    assert second.audit.chosen == "cheap" and not second.audit.cache_hit  # the rules ran again


async def test_strategy_cache_default_keeps_todays_behaviour(clock):
    handler = _handler(_data())
    view = StateView(store={})
    await handler.handle(_src(0, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
    stored = json.loads(view.get(key_state_key("alice")))["decision"]
    assert stored["ttl_s"] is None  # the global cache.ttl_s applies
    clock[0] = T0 + 3000 * 1000
    hit = await handler.handle(_src(1, {"request_id": "r2", "prompt": "x"}), view)
    assert hit.audit.cache_hit and hit.audit.chosen == "smart"


async def test_strategy_ttl_is_honoured_though_the_global_is_longer(clock):
    handler = _handler(_data(strategy_cache={"ttl_s": 60}, ttl_s=3600))
    view = StateView(store={})
    await handler.handle(_src(0, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
    assert json.loads(view.get(key_state_key("alice")))["decision"]["ttl_s"] == 60
    clock[0] = T0 + 59_000
    hit = await handler.handle(_src(1, {"request_id": "r2", "prompt": "x"}), view)
    assert hit.audit.cache_hit and hit.audit.chosen == "smart"
    clock[0] = T0 + 61_000
    expired = await handler.handle(_src(2, {"request_id": "r3", "prompt": "x"}), view)
    assert not expired.audit.cache_hit and expired.audit.chosen == "cheap"


async def test_strategy_ttl_longer_than_the_global(clock):
    handler = _handler(_data(strategy_cache={"ttl_s": 7200}, ttl_s=60))
    view = StateView(store={})
    await handler.handle(_src(0, {"request_id": "r1", "prompt": "x", "tags": ["legal"]}), view)
    clock[0] = T0 + 3600 * 1000
    assert (await handler.handle(_src(1, {"request_id": "r2", "prompt": "x"}), view)).audit.cache_hit


@pytest.mark.parametrize("age_s,hit", [(10, True), (3599, True), (3601, False)])
async def test_old_cached_decision_without_ttl_uses_the_global_ttl(clock, age_s, hit):
    handler = _handler(_data(strategy_cache={"ttl_s": 5}, ttl_s=3600))
    old = {
        "decision": {
            "candidate": "smart",
            "decided_by": "rules",
            "decided_at": T0 - age_s * 1000,
            "count": 0,
        },
        "count": 4,
    }  # written before CachedDecision had ttl_s
    view = StateView(store={key_state_key("alice"): json.dumps(old).encode()})
    out = await handler.handle(_src(0, {"request_id": "r1", "prompt": "x"}), view)
    assert out.audit.cache_hit is hit
    assert out.audit.chosen == ("smart" if hit else "cheap")
    assert CachedDecision.model_validate(old["decision"]).ttl_s is None


def test_janitor_expires_a_decision_after_its_own_ttl():
    now = T0
    k = [
        (b"k:own-short", json.dumps({"decision": {"decided_at": now - 120_000, "ttl_s": 60}}).encode()),
        (b"k:own-long", json.dumps({"decision": {"decided_at": now - 7_200_000, "ttl_s": 86_400}}).encode()),
        (b"k:global", json.dumps({"decision": {"decided_at": now - 120_000, "ttl_s": None}}).encode()),
        (b"k:old-entry", json.dumps({"decision": {"decided_at": now - 4_000_000}}).encode()),
    ]
    assert sorted(expired_keys(k, [], now, ttl_ms=3_600_000, dedup_ms=1)) == [b"k:old-entry", b"k:own-short"]


def test_strategy_cache_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.cache\.ttl_s: Input should be greater than 0"):
        parse_config(_data(strategy_cache={"ttl_s": 0}), environ={})
    with pytest.raises(
        ConfigError, match=r"strategies\[0\]\.cache\.sticky: unknown field \(allowed: enabled, ttl_s\)"
    ):
        parse_config(_data(strategy_cache={"sticky": True}), environ={})
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.cache\.enabled"):
        parse_config(_data(strategy_cache={"enabled": "maybe"}), environ={})


def test_every_builtin_strategy_config_takes_cache():
    from router_stream.routing.judge import JudgeConfig
    from router_stream.routing.keywords import KeywordsConfig
    from router_stream.routing.learned import LearnedConfig
    from router_stream.routing.rules import RulesConfig
    from router_stream.routing.scorer import ScorerConfig
    from router_stream.routing.split import SplitConfig

    for cls in (RulesConfig, KeywordsConfig, SplitConfig, JudgeConfig, ScorerConfig, LearnedConfig):
        assert cls.model_fields["cache"].default is None, cls.__name__
    cfg = LearnedConfig(type="learned", weak="a", strong="b", cache={"enabled": False, "ttl_s": 30})
    assert cache_policy(cfg) == CachePolicy(enabled=False, ttl_s=30.0)
    assert cache_policy(LearnedConfig(type="learned", weak="a", strong="b")) == CachePolicy()
    assert cache_policy(object()) == CachePolicy()  # a config class without the field: defaults
    assert StrategyCache().enabled is None


async def test_pipeline_applies_policies_and_keeps_a_decisions_own_flag():
    class S:
        def __init__(self, name, cacheable):
            self.name, self.cacheable = name, cacheable

        async def decide(self, request, ctx):
            return Decision("b", cacheable=self.cacheable)

    req, ctx = Request(request_id="r", prompt="x"), RoutingContext("k", ("a", "b"))
    cases = [
        (True, CachePolicy(), True, None),
        (False, CachePolicy(), False, None),
        (True, CachePolicy(enabled=False), False, None),
        (False, CachePolicy(enabled=True), False, None),
        (True, CachePolicy(ttl_s=9.0), True, 9.0),
    ]
    for own, policy, cacheable, ttl in cases:
        routed = await Pipeline([S("s", own)], ("a", "b"), "a", cache_policies=[policy]).route(req, ctx)
        assert (routed.cacheable, routed.ttl_s) == (cacheable, ttl), (own, policy)
    routed = await Pipeline([S("s", True)], ("a", "b"), "a").route(req, ctx)  # no policies: as before
    assert routed.cacheable and routed.ttl_s is None
    with pytest.raises(ValueError):
        Pipeline([S("s", True)], ("a", "b"), "a", cache_policies=[])
