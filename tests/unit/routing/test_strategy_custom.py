"""The custom strategy: class / entry point resolution at load, config errors, build, contract."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.routing.base import Decision, RoutingContext
from router_stream.routing.custom import ENTRY_POINT_GROUP, CustomStrategy
from router_stream.runtime import build_pipeline
from router_stream.schemas import Request

CANDIDATES = {name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "smart")}
NAMES = tuple(CANDIDATES)
EXAMPLE = "router_stream_dev.example_strategy:ByLength"
RULES = {"type": "rules", "rules": [{"when": "false", "then": "cheap"}]}


def config(*strategies):
    return parse_config(
        {"candidates": CANDIDATES, "default": "cheap", "strategies": list(strategies)}, environ={}
    )


def config_error(strategy_cfg) -> str:
    # at index 2, as in the example message
    with pytest.raises(ConfigError) as info:
        config(RULES, {**RULES, "name": "rules-2"}, strategy_cfg)  # unique names: the one error is ours
    return str(info.value)


def ctx(key: str = "k") -> RoutingContext:
    return RoutingContext(key=key, candidates=NAMES)


async def test_example_class_builds_and_decides():
    cfg = config(
        {
            "type": "custom",
            "name": "by-length",
            "class": EXAMPLE,
            "config": {"threshold": 10, "short": "cheap", "long": "smart"},
            "candidates": ["cheap", "smart"],
        }
    )
    pipeline = build_pipeline(cfg)
    strategy = pipeline.strategies[0]
    assert isinstance(strategy, CustomStrategy) and strategy.name == "by-length"
    assert strategy.inner.candidates == NAMES  # the keyword form got name, config and candidates
    short = await pipeline.route(Request(request_id="r1", prompt="hi"), ctx())
    long = await pipeline.route(Request(request_id="r2", prompt="x" * 50), ctx())
    assert (short.candidate, short.decided_by) == ("cheap", "by-length")
    assert (long.candidate, long.decided_by) == ("smart", "by-length")
    assert long.verdicts[0].detail == {"length": 50, "threshold": 10}
    assert long.verdicts[0].reason == "prompt length 50 >= 10"


async def test_plain_constructor_gets_config_as_keywords_and_config_name_wins():
    cfg = config(
        {
            "type": "custom",
            "name": "plain",
            "class": "router_stream_dev.example_strategy:ByLengthPlain",
            "config": {"threshold": 3},
        }
    )
    strategy = build_pipeline(cfg).strategies[0]
    assert strategy.inner.threshold == 3 and strategy.inner.name == "by-length-plain"
    assert strategy.name == "plain"  # the config's name is the one in the audit
    assert (await strategy.decide(Request(request_id="r", prompt="abcd"), ctx())).candidate == "smart"


def test_bad_module_is_a_config_error_naming_class_and_field():
    msg = config_error({"type": "custom", "class": "no_such_pkg_xyz.mod:X"})
    assert msg.startswith(
        "strategies[2].class: cannot import 'no_such_pkg_xyz.mod:X': ModuleNotFoundError: "
        "No module named 'no_such_pkg_xyz'"
    )


def test_bad_attribute_is_a_config_error():
    msg = config_error({"type": "custom", "class": "router_stream_dev.example_strategy:Nope"})
    assert msg.startswith("strategies[2].class: cannot import 'router_stream_dev.example_strategy:Nope'")
    assert "has no attribute 'Nope'" in msg


def test_not_a_strategy_is_a_config_error():
    msg = config_error({"type": "custom", "class": "router_stream.schemas:Request"})
    assert msg.startswith("strategies[2].class: 'router_stream.schemas:Request' is not a strategy")
    assert "async def decide" in msg


def test_sync_decide_and_non_class_are_config_errors(monkeypatch):
    mod = types.ModuleType("fake_custom_mod")

    class Sync:
        def decide(self, request, ctx):
            return None

    mod.Sync, mod.func = Sync, lambda: None
    monkeypatch.setitem(sys.modules, "fake_custom_mod", mod)
    assert "decide() must be 'async def'" in config_error({"type": "custom", "class": "fake_custom_mod:Sync"})
    assert "'fake_custom_mod:func' is not a class" in config_error(
        {"type": "custom", "class": "fake_custom_mod:func"}
    )


def test_malformed_class_string_and_source_count():
    assert "is not of the form 'package.module:ClassName'" in config_error(
        {"type": "custom", "class": "a.b.C"}
    )
    assert config_error({"type": "custom"}).startswith("strategies[2]: give exactly one of 'class'")
    both = config_error({"type": "custom", "class": EXAMPLE, "entry_point": "x"})
    assert both.startswith("strategies[2]: give exactly one of 'class'") and both.endswith("not both"), both
    assert "no entry point" not in both  # neither is imported when both are given


def test_candidates_are_checked_at_load():
    msg = config_error({"type": "custom", "class": EXAMPLE, "candidates": ["cheap", "smartt"]})
    assert "strategies[2].candidates[1]: 'smartt' is not a candidate" in msg


class _Fake:
    name = "fake"

    def __init__(self, **config):
        self.config = config

    async def decide(self, request, ctx):
        return Decision("smart", reason="fake")


def fake_entry_points(monkeypatch, eps):
    calls = []

    def entry_points(**kw):
        calls.append(kw)
        return [e for e in eps if e.group == kw.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return calls


async def test_entry_point_is_loaded(monkeypatch):
    mod = types.ModuleType("fake_ep_mod")
    mod.Fake = _Fake
    monkeypatch.setitem(sys.modules, "fake_ep_mod", mod)
    calls = fake_entry_points(
        monkeypatch,
        [importlib.metadata.EntryPoint(name="house", value="fake_ep_mod:Fake", group=ENTRY_POINT_GROUP)],
    )
    cfg = config({"type": "custom", "name": "ep", "entry_point": "house", "config": {"a": 1}})
    assert calls and calls[0] == {"group": ENTRY_POINT_GROUP}
    strategy = build_pipeline(cfg).strategies[0]
    assert strategy.inner.config == {"a": 1}
    assert (await strategy.decide(Request(request_id="r", prompt="x"), ctx())).candidate == "smart"


def test_unknown_entry_point_lists_the_available_ones(monkeypatch):
    fake_entry_points(
        monkeypatch,
        [
            importlib.metadata.EntryPoint(name="beta", value="x:Y", group=ENTRY_POINT_GROUP),
            importlib.metadata.EntryPoint(name="alpha", value="x:Z", group=ENTRY_POINT_GROUP),
            importlib.metadata.EntryPoint(name="other", value="x:W", group="something.else"),
        ],
    )
    msg = config_error({"type": "custom", "entry_point": "gamma"})
    assert msg.startswith(
        f"strategies[2].entry_point: no entry point 'gamma' in group '{ENTRY_POINT_GROUP}' "
        "(available: alpha, beta)"
    )
    fake_entry_points(monkeypatch, [])
    assert "(available: none installed)" in config_error({"type": "custom", "entry_point": "gamma"})


def test_entry_point_that_fails_to_load_names_it(monkeypatch):
    fake_entry_points(
        monkeypatch,
        [importlib.metadata.EntryPoint(name="broken", value="no_such_pkg_xyz:C", group=ENTRY_POINT_GROUP)],
    )
    msg = config_error({"type": "custom", "entry_point": "broken"})
    assert msg.startswith(
        "strategies[2].entry_point: cannot load entry point 'broken' (no_such_pkg_xyz:C): ModuleNotFoundError"
    )


def test_constructor_failure_is_a_config_error_at_build():
    cfg = config({"type": "custom", "name": "bl", "class": EXAMPLE, "config": {"threshold": -1}})
    with pytest.raises(
        ConfigError,
        match=r"custom strategy 'bl': class '.*ByLength' could not be created: "
        r"ValueError: threshold must be",
    ):
        build_pipeline(cfg)


async def test_wrong_return_type_is_an_error_verdict_and_a_bad_name_a_miss(monkeypatch):
    mod = types.ModuleType("fake_ret_mod")

    class Wrong:
        def __init__(self, config):
            self.what = config["what"]

        async def decide(self, request, ctx):
            return self.what if self.what != "decision" else Decision("nobody")

    mod.Wrong = Wrong
    monkeypatch.setitem(sys.modules, "fake_ret_mod", mod)
    cfg = config(
        {"type": "custom", "name": "w1", "class": "fake_ret_mod:Wrong", "config": {"what": "smart"}},
        {"type": "custom", "name": "w2", "class": "fake_ret_mod:Wrong", "config": {"what": "decision"}},
    )
    routed = await build_pipeline(cfg).route(Request(request_id="r", prompt="x"), ctx())
    assert [(v.strategy, v.outcome) for v in routed.verdicts] == [("w1", "error"), ("w2", "miss")]
    assert "returned str, expected a Decision or None" in routed.verdicts[0].reason
    assert (routed.candidate, routed.decided_by) == ("cheap", "default")
