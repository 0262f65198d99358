"""Online recalibration of the learned router: the threshold moves to hold a strong-call share.

Scores are controlled (the artifact's ``scores`` is replaced by a lookup), the controller state
lives in a :class:`StateView` over a dict store, as in the worker.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.processing.handler import Handler
from router_stream.processing.partition import Source, StateView
from router_stream.providers.base import Completion
from router_stream.routing.base import RoutingContext
from router_stream.routing.learned import LearnedConfig, LearnedStrategy
from router_stream.routing.strategy_config import BuildContext
from router_stream.runtime import build_pipeline
from router_stream.schemas import Request, Usage
from router_stream.state.store import controller_key

RECAL = {"target_strong_share": 0.3, "window": 1000, "step": 0.002}


def strategy(scores: dict[str, float], **over) -> LearnedStrategy:
    cfg = {"type": "learned", "weak": "cheap", "strong": "smart", "recalibrate": RECAL, **over}
    strat = LearnedConfig.model_validate(cfg).build(BuildContext())
    strat._router.scores = lambda texts: np.array([scores[t] for t in texts])
    return strat


def score_stream(n: int, seed: int = 7, mean: float = 0.05, sd: float = 0.15) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"prompt {seed} {i}": float(s) for i, s in enumerate(rng.normal(mean, sd, n))}


async def feed(strat: LearnedStrategy, scores: dict[str, float], view: StateView | None) -> list:
    out = []
    for text in scores:
        ctx = RoutingContext(key="k", candidates=("cheap", "smart"), state=view)
        out.append(await strat.decide(Request(request_id=text, prompt=text), ctx))
    return out


def commit(view: StateView, store: dict) -> None:
    """What the processor does after the transaction: the pending writes land in the store."""
    for k, v in view.pending.items():
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v
    view.pending.clear()


async def test_holds_the_strong_share_at_the_target():
    scores = score_stream(3000)
    # start far off: every request would be strong at -0.3 (share ~0.99 instead of 0.3)
    strat = strategy(scores, threshold=-0.3)
    decisions = await feed(strat, scores, StateView(store={}))
    strong = [d.candidate == "smart" for d in decisions]
    assert np.mean(strong[:100]) > 0.8
    last = float(np.mean(strong[-1000:]))
    assert abs(last - 0.3) <= 0.05, last
    # and the threshold sits near the score distribution's 0.7 quantile
    assert abs(decisions[-1].detail["threshold"] - float(np.quantile(list(scores.values()), 0.7))) < 0.05


async def test_follows_a_shift_of_the_score_distribution():
    before, after = score_stream(1500, seed=1), score_stream(3000, seed=2, mean=0.3, sd=0.1)
    strat = strategy({**before, **after})
    view = StateView(store={})
    await feed(strat, before, view)
    decisions = await feed(strat, after, view)
    last = float(np.mean([d.candidate == "smart" for d in decisions[-1000:]]))
    assert abs(last - 0.3) <= 0.05, last


async def test_threshold_and_share_are_recorded_in_the_detail():
    scores = score_stream(50)
    strat = strategy(scores)
    view = StateView(store={})
    decisions = await feed(strat, scores, view)
    first, second = decisions[0].detail, decisions[1].detail
    assert first["threshold"] == strat.threshold  # a fresh controller starts at the configured one
    assert second["threshold"] != first["threshold"]
    assert {"controller_share", "controller_n"} <= set(first) and first["controller_n"] == 1
    st = json.loads(view.get(controller_key("learned")))
    assert st["n"] == 50 and decisions[-1].detail["controller_share"] == round(st["share"], 4)
    # the stored threshold is the one the next decision uses
    extra = {"one more": 0.0}
    strat._router.scores = lambda texts: np.array([extra[t] for t in texts])
    d = (await feed(strat, extra, view))[0]
    assert d.detail["threshold"] == st["threshold"]


async def test_state_round_trip_continues_from_the_stored_threshold():
    scores = score_stream(1500)
    store: dict[bytes, bytes] = {}
    view = StateView(store=store)
    await feed(strategy(scores, threshold=-0.3), scores, view)
    commit(view, store)
    stored = json.loads(store[controller_key("learned")])
    assert stored["n"] == 1500 and stored["threshold"] > 0.0
    # a new instance (a restart: the store is rebuilt from the changelog) continues from it
    more = score_stream(10, seed=9)
    again = strategy(more, threshold=-0.3)
    decisions = await feed(again, more, StateView(store=store))
    assert decisions[0].detail["threshold"] == stored["threshold"]
    assert decisions[0].detail["controller_n"] == 1501


async def test_without_state_the_configured_threshold_is_used():
    scores = score_stream(20)
    strat = strategy(scores, threshold=0.1)
    decisions = await feed(strat, scores, None)  # e.g. router-stream explain
    assert {d.detail["threshold"] for d in decisions} == {0.1}
    assert all("controller_share" not in d.detail for d in decisions)
    assert [d.candidate for d in decisions] == ["smart" if s >= 0.1 else "cheap" for s in scores.values()]


async def test_a_changed_configured_threshold_or_a_broken_entry_restarts_the_controller():
    scores = score_stream(200)
    store: dict[bytes, bytes] = {}
    view = StateView(store=store)
    await feed(strategy(scores, threshold=0.0), scores, view)
    commit(view, store)
    one = {"x": 0.5}
    d = (await feed(strategy(one, threshold=0.2), one, StateView(store=store)))[0]
    assert d.detail["threshold"] == 0.2 and d.detail["controller_n"] == 1
    store[controller_key("learned")] = b"{not json"
    d = (await feed(strategy(one, threshold=0.0), one, StateView(store=store)))[0]
    assert d.detail["threshold"] == 0.0 and d.detail["controller_n"] == 1


async def test_bounds_clamp_the_threshold_and_abstentions_do_not_count():
    scores = score_stream(500)
    strat = strategy(scores, threshold=-0.3, recalibrate={**RECAL, "max_threshold": -0.25})
    decisions = await feed(strat, scores, StateView(store={}))
    assert max(d.detail["threshold"] for d in decisions) <= -0.25
    band = {"a": 0.0, "b": 0.001}
    strat = strategy(band, threshold=0.0, abstain_band=0.01)
    view = StateView(store={})
    assert await feed(strat, band, view) == [None, None]
    assert controller_key("learned") not in view.pending


def test_recalibrate_config_errors_name_the_field():
    base = {
        "candidates": {
            "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
            "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
        },
        "default": "cheap",
    }

    def load(recal, **over):
        s = {"type": "learned", "weak": "cheap", "strong": "smart", "recalibrate": recal, **over}
        return parse_config({**base, "strategies": [s]}, environ={})

    with pytest.raises(ConfigError, match=r"strategies\[0\]\.recalibrate\.target_strong_share"):
        load({"target_strong_share": 1.5})
    with pytest.raises(
        ConfigError, match=r"strategies\[0\]\.recalibrate\.target_strong_share: Field required"
    ):
        load({"window": 10})
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.recalibrate\.step"):
        load({"target_strong_share": 0.3, "step": 0})
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.recalibrate: .*min_threshold"):
        load({"target_strong_share": 0.3, "min_threshold": 1, "max_threshold": 0})
    with pytest.raises(ConfigError, match=r"strategies\[0\]: .*recalibrate needs a two-model"):
        parse_config(
            {
                **base,
                "strategies": [
                    {
                        "type": "learned",
                        "candidates": {"m": "cheap"},
                        "recalibrate": {"target_strong_share": 0.3},
                    }
                ],
            },
            environ={},
        )
    assert load({"target_strong_share": 0.3}).strategies[0].recalibrate.window == 1000


# ---------------------------------------------------------------- through the handler
class FakeDispatcher:
    async def call(self, request, chosen, deadline_at):
        completion = Completion(text="ok", usage=Usage(), provider_model=chosen, latency_ms=1.0)
        return SimpleNamespace(
            completion=completion,
            error=None,
            error_kind=None,
            attempts=[],
            served_by=chosen,
            cost_usd=0.0,
            batch=None,
            cascade=None,
        )


async def test_handler_gives_the_strategy_the_batch_state_and_the_audit_shows_the_threshold():
    config = parse_config(
        {
            "candidates": {
                "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
                "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
            },
            "default": "cheap",
            "strategies": [
                {
                    "type": "learned",
                    "name": "lr",
                    "weak": "cheap",
                    "strong": "smart",
                    "recalibrate": {"target_strong_share": 0.3},
                    "cache": {"enabled": False},
                }
            ],
        },
        environ={},
    )
    handler = Handler(config, build_pipeline(config), FakeDispatcher(), "w")
    view = StateView(store={})
    thresholds = []
    for i in range(5):
        body = {"request_id": f"r{i}", "prompt": f"What is {i} + {i}?"}
        out = await handler.handle(Source("t", 0, i, b"alice", json.dumps(body).encode()), view)
        verdict = out.audit.verdicts[-1]
        assert verdict.strategy == "lr" and not out.audit.cache_hit
        thresholds.append(verdict.detail["threshold"])
        assert verdict.detail["controller_n"] == i + 1
    assert len(set(thresholds)) == 5  # it moved after every decision
    assert json.loads(view.pending[controller_key("lr")])["n"] == 5  # in the batch's writes (the changelog)


async def test_janitor_never_purges_the_controller_state():
    from router_stream.config import CacheConfig
    from router_stream.processing.janitor import run_janitor

    store = {
        controller_key("learned"): b'{"threshold":0.1,"share":0.3,"n":9}',
        b"k:old": json.dumps({"decision": None, "count": 1}).encode(),
    }
    purged: list[dict] = []

    class Gate:
        def exclusive(self):
            return self

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

    async def transact(_outputs, writes):
        purged.append(writes)

    part = SimpleNamespace(
        gate=Gate(),
        tp="t-0",
        transactions=SimpleNamespace(transact=transact),
        store=SimpleNamespace(
            scan=lambda prefix: sorted((k, v) for k, v in store.items() if k.startswith(prefix))
        ),
    )
    task = asyncio.create_task(run_janitor(part, CacheConfig(purge_interval_s=0.001)))
    while not purged:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert purged[0] == {b"k:old": None}
