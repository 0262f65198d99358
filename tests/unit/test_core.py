"""Unit tests for expressions, the pipeline, config errors, batching order and the handler's cache logic."""

from __future__ import annotations

import json

import pytest

from router_stream.config import parse_config
from router_stream.devtools.model_server import ModelServer
from router_stream.errors import ConfigError
from router_stream.processing.handler import Handler, Source, StateView
from router_stream.processing.ordering import order_chains
from router_stream.providers.resilience import Dispatcher
from router_stream.routing.base import Decision, RoutingContext
from router_stream.routing.expressions import Expression, ExpressionError, request_names
from router_stream.routing.pipeline import Pipeline
from router_stream.schemas import Request


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


# ---------------------------------------------------------------- expressions
@pytest.mark.parametrize(
    "expr,expected",
    [
        ("len(prompt) > 200", False),
        ('fields.lang == "de"', True),
        ('"legal" in tags', True),
        ('get(fields, "tier", "free") == "gold"', False),
        ("fields.missing == 1", False),
        ('key == "alice" and n_messages == 1', True),
    ],
)
def test_expressions_evaluate_over_request(expr, expected):
    req = Request(request_id="r", prompt="hello", fields={"lang": "de"}, tags=["legal"])
    matched, _ = Expression(expr).evaluate(request_names(req, "alice"))
    assert matched is expected


@pytest.mark.parametrize(
    "expr",
    [
        '__import__("os")',
        'open("x")',
        "prompt.__class__",
        "lambda: 1",
        "1 +",
        "unknown_name == 1",
        "[x for x in tags]",
    ],
)
def test_unsafe_or_invalid_expressions_are_rejected(expr):
    with pytest.raises(ExpressionError):
        Expression(expr)


def test_one_expression_evaluates_each_request_on_its_own_names():
    """The evaluator is kept per expression: a later request must not see an earlier one's names."""
    expr = Expression('fields.lang == "de" and fields.tier == true')
    de = request_names(Request(request_id="a", prompt="x", fields={"lang": "de", "tier": True}), "k")
    en = request_names(Request(request_id="b", prompt="x", fields={"lang": "en", "tier": True}), "k")
    broken = request_names(Request(request_id="c", prompt="x", fields={"lang": "de"}), "k")
    assert [expr.evaluate(n)[0] for n in (de, en, de, broken, de)] == [True, False, True, False, True]
    assert "tier" in (expr.evaluate(broken)[1] or "")


def test_metric_children_are_the_registry_series():
    from router_stream import metrics

    before = (
        metrics.REGISTRY.get_sample_value("router_stream_cache_lookups_total", {"result": "test-children"})
        or 0.0
    )
    metrics.cache_lookups("test-children").inc()
    metrics.cache_lookups("test-children").inc(2)
    assert metrics.cache_lookups("test-children") is metrics.CACHE.labels("test-children")
    assert (
        metrics.REGISTRY.get_sample_value("router_stream_cache_lookups_total", {"result": "test-children"})
        == before + 3
    )


def test_runtime_problem_reported_not_raised():
    matched, problem = Expression("fields.nope > 1").evaluate(
        request_names(Request(request_id="r", prompt="x"), "k")
    )
    assert matched is False and "nope" in problem


# ---------------------------------------------------------------- config
def test_config_error_names_the_field_and_known_candidates():
    data = _cfg(
        strategies=[
            {
                "type": "rules",
                "rules": [
                    {"when": "True", "then": "cheap"},
                    {"when": "True", "then": "cheap"},
                    {"when": "True", "then": "smartt"},
                ],
            }
        ]
    )
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ={})
    assert (
        "strategies[0].rules[2].then: 'smartt' is not a candidate; did you mean 'smart'? (known: cheap, smart)"
        in str(err.value)
    )


def test_config_error_for_bad_expression_names_the_rule():
    with pytest.raises(ConfigError) as err:
        parse_config(
            _cfg(strategies=[{"type": "rules", "rules": [{"when": "len(prompt) >", "then": "cheap"}]}]),
            environ={},
        )
    assert "strategies[0].rules[0].when" in str(err.value)


def test_config_error_for_bad_value_shows_it():
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = "ftp://x"
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ={})
    assert "candidates.cheap.base_url" in str(err.value) and "ftp://x" in str(err.value)


def test_env_overrides_apply():
    cfg = parse_config(
        _cfg(),
        environ={"KAFKA_BOOTSTRAP_SERVERS": "h:1", "ROUTER_STREAM__CANDIDATES__CHEAP__MAX_RETRIES": "7"},
    )
    assert cfg.kafka.bootstrap_servers == "h:1" and cfg.candidates["cheap"].max_retries == 7


def test_every_short_env_form_and_its_precedence():
    env = {
        "ROUTER_STREAM_BOOTSTRAP_SERVERS": "rs:1",
        "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        "ROUTER_STREAM_GROUP_ID": "g",
        "ROUTER_STREAM_WORKER_ID": "w-7",
        "ROUTER_STREAM_METRICS_PORT": "7001",
        "ROUTER_STREAM_STATE_DIR": "/s",
    }
    cfg = parse_config(_cfg(), environ=env)
    assert cfg.kafka.bootstrap_servers == "rs:1"  # the router-stream name wins over KAFKA_BOOTSTRAP_SERVERS
    assert (cfg.kafka.group_id, cfg.worker.worker_id, cfg.worker.metrics_port, cfg.cache.state_dir) == (
        "g",
        "w-7",
        7001,
        "/s",
    )


# ---------------------------------------------------------------- pipeline
class _Fixed:
    def __init__(self, name, answer, boom=False):
        self.name, self.answer, self.boom = name, answer, boom

    async def decide(self, request, ctx):
        if self.boom:
            raise RuntimeError("broken strategy")
        if self.answer is None:
            ctx.explain("not my case")
            return None
        return Decision(self.answer)


async def test_pipeline_first_decision_wins_and_records_every_verdict():
    p = Pipeline(
        [
            _Fixed("a", None),
            _Fixed("b", "ghost"),
            _Fixed("c", None, boom=True),
            _Fixed("d", "smart"),
            _Fixed("e", "cheap"),
        ],
        ("cheap", "smart"),
        "cheap",
    )
    routed = await p.route(Request(request_id="r", prompt="x"), RoutingContext("k", ("cheap", "smart")))
    assert routed.candidate == "smart" and routed.decided_by == "d" and routed.cacheable
    assert [v.outcome for v in routed.verdicts] == ["abstained", "miss", "error", "chose"]
    assert routed.verdicts[0].reason == "not my case"


async def test_pipeline_falls_to_default_uncached():
    p = Pipeline([_Fixed("a", None)], ("cheap", "smart"), "smart")
    routed = await p.route(Request(request_id="r", prompt="x"), RoutingContext("k", ("cheap", "smart")))
    assert (routed.candidate, routed.decided_by, routed.cacheable) == ("smart", "default", False)


# ---------------------------------------------------------------- per-key ordering groups
def test_group_keeps_same_key_and_same_request_id_together():
    chains = order_chains([("a", "1"), ("b", "2"), ("a", "3"), ("c", "2"), ("d", None)])
    as_sets = sorted(sorted(c) for c in chains)
    assert as_sets == [[0, 2], [1, 3], [4]]
    for c in chains:
        assert c == sorted(c)  # offset order inside a chain


# ---------------------------------------------------------------- handler: cache, dedup, request-chosen candidate
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


# ---------------------------------------------------------------- state expiry
def test_expired_keys_picks_old_decisions_and_dedup_entries_only():
    from router_stream.processing.janitor import expired_keys

    now = 1_000_000
    k = [
        (b"k:fresh", json.dumps({"decision": {"decided_at": now - 10}, "count": 3}).encode()),
        (b"k:old", json.dumps({"decision": {"decided_at": now - 5000}, "count": 1}).encode()),
        (b"k:none", json.dumps({"decision": None, "count": 9}).encode()),
    ]
    r = [
        (b"r:new", json.dumps({"produced_at": now - 1}).encode()),
        (b"r:stale", json.dumps({"produced_at": now - 99_999}).encode()),
    ]
    assert sorted(expired_keys(k, r, now, ttl_ms=1000, dedup_ms=50_000)) == [b"k:none", b"k:old", b"r:stale"]


# ---------------------------------------------------------------- broker security settings
def test_sasl_settings_come_from_env_and_missing_env_names_the_field(monkeypatch):
    from router_stream.config import KafkaConfig
    from router_stream.kafka_settings import client_settings

    kafka = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username_env="KUSER",
        sasl_password_env="KPASS",
    )
    monkeypatch.delenv("KPASS", raising=False)
    monkeypatch.setenv("KUSER", "svc")
    with pytest.raises(ConfigError) as err:
        client_settings(kafka)
    assert "kafka.sasl_password_env" in str(err.value) and "KPASS" in str(err.value)
    monkeypatch.setenv("KPASS", "s3cret-pw")
    settings = client_settings(kafka)
    assert settings["sasl_plain_password"] == "s3cret-pw" and settings["ssl_context"] is not None
    assert "s3cret-pw" not in repr(kafka)


# ---------------------------------------------------------------- readiness: candidates reachable
async def test_tcp_reachability_of_candidate_endpoints():
    from router_stream.devtools.harness import free_port
    from router_stream.runtime import _tcp_reachable

    async with ModelServer(name="up") as up:
        assert await _tcp_reachable(up.base_url) is True
    assert await _tcp_reachable(f"http://127.0.0.1:{free_port()}/v1") is False


def test_tune_gc_freezes_start_up_objects_and_raises_the_first_threshold():
    import gc

    from router_stream.app import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(50_000)
        assert gc.get_threshold()[0] == 50_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_readme_pipeline_of_every_strategy_type_builds():
    """The README's one-pipeline example must stay a valid config that builds every strategy."""
    import re
    from pathlib import Path

    import yaml

    from router_stream.config import RouterConfig
    from router_stream.routing.config import StrategyConfig
    from router_stream.runtime import build_pipeline

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("Every strategy type in one pipeline")
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.S).group(1)
    data = yaml.safe_load(block)
    data["candidates"] = {
        name: {
            "base_url": "http://127.0.0.1:9/v1",
            "model": name,
            "price_input_per_1k": p,
            "price_output_per_1k": 3 * p,
        }
        for name, p in (("cheap", 0.0005), ("strong", 0.01))
    }
    pipeline = build_pipeline(RouterConfig.model_validate(data))
    types = {s["type"] for s in data["strategies"]}
    from typing import get_args

    union = get_args(StrategyConfig)[0]  # Annotated[Union[...], Field] -> Union of the config classes
    known = {get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(union)}
    assert types == known, f"README example lacks {known - types}"
    assert len(pipeline.strategies) == len(data["strategies"])
