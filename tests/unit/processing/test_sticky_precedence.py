"""A sticky decision never skips an earlier strategy (issue 17, part 1).

The key's cached decision stands in for the strategy that made it, at that strategy's position:
every strategy before it runs on every request and wins when it decides; only when all of them
abstain does the sticky decision apply (without asking its decider again). Checked for each
strategy type as the earlier strategy and as the sticky decider, at the handler (state, audit,
metrics) and at the pipeline.
"""

from __future__ import annotations

import json

import pytest

from router_stream.config import parse_config
from router_stream.processing import handler as handler_mod
from router_stream.processing.handler import Handler
from router_stream.processing.partition import Source, StateView
from router_stream.routing.base import Decision, RoutingContext
from router_stream.runtime import build_pipeline
from router_stream.schemas import CachedDecision, Request
from router_stream.state.store import key_state_key

from ..fakes import InstantDispatcher

T0 = 1_800_000_000_000
LOCAL = "http://127.0.0.1:9/v1"  # never called: no test here reaches a model or an endpoint


class LegalOnly:
    """A custom strategy: ``strong`` for requests tagged legal, else abstains."""

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        return Decision("strong", reason="legal") if "legal" in request.tags else None


class AlwaysCheap:
    """A custom strategy that always decides ``cheap``; counts its calls."""

    calls = 0

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        AlwaysCheap.calls += 1
        return Decision("cheap")


HERE = __name__

#: strategies that decide ``strong`` for a request tagged legal and abstain otherwise
EARLIER = {
    "rules": {"type": "rules", "rules": [{"when": '"legal" in tags', "then": "strong"}]},
    "keywords": {
        "type": "keywords",
        "rules": [{"keywords": ["legal"], "fields": ["tags"], "then": "strong"}],
    },
    "custom": {"type": "custom", "class": f"{HERE}:LegalOnly"},
}

#: one config per strategy type, as the decider of the key's sticky decision (never asked here)
DECIDERS = {
    "rules": {"type": "rules", "rules": [{"when": "true", "then": "cheap"}]},
    "keywords": {"type": "keywords", "rules": [{"keywords": ["a"], "then": "cheap"}]},
    "split": {"type": "split", "weights": {"cheap": 1, "strong": 1}},
    "learned": {"type": "learned", "weak": "cheap", "strong": "strong"},
    "optimize": {"type": "optimize", "by": "price", "candidates": ["cheap", "strong"], "cacheable": True},
    "judge": {"type": "judge", "candidate": "judge", "allowed": {"cheap": "easy", "strong": "hard"}},
    "scorer": {"type": "scorer", "url": "http://127.0.0.1:9/score"},
    "custom": {"type": "custom", "class": f"{HERE}:AlwaysCheap"},
}


def _config(strategies: list[dict]) -> dict:
    candidate = {"base_url": LOCAL, "price_input_per_1k": 0.001, "price_output_per_1k": 0.002}
    return {
        "candidates": {name: {**candidate, "model": name} for name in ("cheap", "strong", "judge")},
        "default": "cheap",
        "strategies": strategies,
    }


def _handler(strategies: list[dict]) -> tuple[Handler, InstantDispatcher]:
    config = parse_config(_config(strategies), environ={})
    dispatcher = InstantDispatcher()
    return Handler(config, build_pipeline(config), dispatcher, "w"), dispatcher


def _src(offset: int, tags: list[str] | None = None, key: bytes = b"user-0") -> Source:
    body = {"request_id": f"r{offset}", "prompt": "What is the capital of France?", "tags": tags or []}
    return Source("t", 0, offset, key, json.dumps(body).encode())


def _seed(
    view: StateView,
    decided_by: str,
    candidate: str = "cheap",
    key: str = "user-0",
    age_ms: int = 1000,
    ttl_s: float | None = None,
) -> None:
    decision = CachedDecision(candidate=candidate, decided_by=decided_by, decided_at=T0 - age_ms, ttl_s=ttl_s)
    view.put(key_state_key(key), json.dumps({"decision": decision.model_dump(), "count": 1}).encode())


def _cached(view: StateView, key: str = "user-0") -> dict | None:
    return json.loads(view.get(key_state_key(key)))["decision"]


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    monkeypatch.setattr(handler_mod, "now_ms", lambda: T0)


@pytest.mark.parametrize("decider", sorted(DECIDERS))
@pytest.mark.parametrize("earlier", sorted(EARLIER))
async def test_an_earlier_strategy_wins_over_a_later_sticky_decision(earlier, decider):
    first = {**EARLIER[earlier], "name": "compliance", "cache": {"enabled": False}}
    second = {**DECIDERS[decider], "name": "sticky-one"}
    handler, dispatcher = _handler([first, second])
    view = StateView(store={})
    _seed(view, "sticky-one", "cheap")
    AlwaysCheap.calls = 0

    legal = await handler.handle(_src(1, ["legal"]), view)
    assert (legal.audit.chosen, legal.audit.decided_by, legal.audit.cache_hit) == (
        "strong",
        "compliance",
        False,
    )
    assert legal.audit.sticky is None and [v.strategy for v in legal.audit.verdicts] == ["compliance"]
    assert dispatcher.calls == ["strong"]
    # the compliance rule's decision is not sticky: the key keeps its sticky decision
    assert _cached(view)["decided_by"] == "sticky-one" and _cached(view)["candidate"] == "cheap"

    plain = await handler.handle(_src(2), view)
    assert (plain.audit.chosen, plain.audit.decided_by, plain.audit.cache_hit) == (
        "cheap",
        "sticky-one",
        True,
    )
    assert [(v.strategy, v.outcome) for v in plain.audit.verdicts] == [
        ("compliance", "abstained"),
        ("sticky-one", "chose"),
    ]
    assert plain.audit.verdicts[1].detail["sticky"] is True
    assert plain.audit.sticky == {
        "strategy": "sticky-one",
        "candidate": "cheap",
        "decided_at": T0 - 1000,
        "age_ms": 1000,
        "ttl_s": None,
        "ran_before": ["compliance"],
    }
    assert AlwaysCheap.calls == 0  # the sticky decider is not asked again
    assert dispatcher.calls == ["strong", "cheap"]


@pytest.mark.parametrize("decider", sorted(DECIDERS))
async def test_a_sticky_decision_of_the_first_strategy_applies_at_once(decider):
    handler, _dispatcher = _handler(
        [{**DECIDERS[decider], "name": "head"}, {**EARLIER["rules"], "name": "never-asked"}]
    )
    view = StateView(store={})
    _seed(view, "head", "strong")
    AlwaysCheap.calls = 0
    out = await handler.handle(_src(1, ["legal"]), view)
    assert (out.audit.chosen, out.audit.decided_by, out.audit.cache_hit) == ("strong", "head", True)
    assert [v.strategy for v in out.audit.verdicts] == ["head"] and out.audit.sticky["ran_before"] == []
    assert AlwaysCheap.calls == 0


@pytest.mark.parametrize("earlier", sorted(EARLIER))
async def test_a_cacheable_earlier_decision_replaces_the_sticky_one(earlier):
    handler, _ = _handler([{**EARLIER[earlier], "name": "first"}, {**DECIDERS["custom"], "name": "second"}])
    view = StateView(store={})
    _seed(view, "second", "cheap")
    out = await handler.handle(_src(1, ["legal"]), view)
    assert (out.audit.chosen, out.audit.decided_by) == ("strong", "first")
    assert _cached(view)["decided_by"] == "first" and _cached(view)["candidate"] == "strong"
    again = await handler.handle(_src(2), view)  # now sticky for the first strategy
    assert (again.audit.chosen, again.audit.decided_by, again.audit.cache_hit) == ("strong", "first", True)


async def test_sticky_decider_in_the_middle_runs_the_head_and_skips_the_tail():
    head = {**EARLIER["rules"], "name": "head", "cache": {"enabled": False}}
    middle = {**EARLIER["keywords"], "name": "middle"}
    tail = {**DECIDERS["custom"], "name": "tail"}
    handler, _ = _handler([head, middle, tail])
    view = StateView(store={})
    _seed(view, "middle", "strong")
    AlwaysCheap.calls = 0
    out = await handler.handle(_src(1), view)
    assert (out.audit.chosen, out.audit.decided_by, out.audit.cache_hit) == ("strong", "middle", True)
    assert [v.strategy for v in out.audit.verdicts] == ["head", "middle"] and AlwaysCheap.calls == 0


async def test_an_entry_whose_decider_left_the_pipeline_is_rerouted_and_replaced():
    handler, _ = _handler([{**EARLIER["rules"], "name": "first"}, {**DECIDERS["custom"], "name": "second"}])
    view = StateView(store={})
    _seed(view, "renamed-away", "strong")
    out = await handler.handle(_src(1), view)
    assert (out.audit.chosen, out.audit.decided_by, out.audit.cache_hit) == ("cheap", "second", False)
    assert _cached(view)["decided_by"] == "second"


async def test_an_entry_whose_decider_stopped_caching_is_not_applied():
    handler, _ = _handler(
        [
            {**EARLIER["rules"], "name": "first"},
            {**DECIDERS["custom"], "name": "second", "cache": {"enabled": False}},
        ]
    )
    view = StateView(store={})
    _seed(view, "second", "strong")
    out = await handler.handle(_src(1), view)
    assert (out.audit.chosen, out.audit.decided_by, out.audit.cache_hit) == ("cheap", "second", False)
    assert _cached(view) is None


async def test_an_expired_sticky_decision_asks_its_decider_again():
    handler, _ = _handler([{**EARLIER["rules"], "name": "first"}, {**DECIDERS["custom"], "name": "second"}])
    view = StateView(store={})
    _seed(view, "second", "strong", age_ms=10_000, ttl_s=5)
    AlwaysCheap.calls = 0
    out = await handler.handle(_src(1), view)
    assert (out.audit.chosen, out.audit.cache_hit, AlwaysCheap.calls) == ("cheap", False, 1)


async def test_entries_written_before_the_change_keep_their_decider():
    """Old entries carry ``decided_by`` (the strategy name) and no ``ttl_s``: they apply at their
    decider's position like new ones, with ``cache.ttl_s``."""
    handler, _ = _handler(
        [
            {**EARLIER["rules"], "name": "first", "cache": {"enabled": False}},
            {**DECIDERS["custom"], "name": "second"},
        ]
    )
    view = StateView(store={})
    view.put(
        key_state_key("user-0"),
        json.dumps(
            {"decision": {"candidate": "cheap", "decided_by": "second", "decided_at": T0 - 5}, "count": 3}
        ).encode(),
    )
    assert (await handler.handle(_src(1, ["legal"]), view)).audit.chosen == "strong"
    plain = await handler.handle(_src(2), view)
    assert plain.audit.cache_hit and plain.audit.chosen == "cheap"
