"""The split strategy: deterministic arms, the weight distribution, the ramp, config errors."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.routing.base import RoutingContext, stable_fraction
from router_stream.routing.split import SplitConfig, SplitStrategy, to_epoch_ms
from router_stream.routing.strategy_config import BuildContext
from router_stream.runtime import build_pipeline
from router_stream.schemas import Request

CANDIDATES = {
    name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "smart", "canary")
}
NAMES = tuple(CANDIDATES)
REQ = Request(request_id="r1", prompt="hi")
START_ISO, END_ISO = "2026-12-01T00:00:00Z", "2026-12-01T10:00:00Z"
START = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
END = START + 10 * 3600 * 1000
KEYS = [f"user-{i}" for i in range(10_000)]


def strategy(**cfg) -> SplitStrategy:
    return SplitConfig.model_validate({"type": "split", **cfg}).build(BuildContext())


async def arms(s: SplitStrategy, now_ms: int = START, keys=KEYS) -> dict[str, str]:
    return {
        k: (await s.decide(REQ, RoutingContext(key=k, candidates=NAMES, now_ms=now_ms))).candidate
        for k in keys
    }


def shares(assignment: dict[str, str]) -> dict[str, float]:
    counts = Counter(assignment.values())
    return {name: counts[name] / len(assignment) for name in NAMES}


def config_error(strategy_cfg) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"candidates": CANDIDATES, "default": "cheap", "strategies": [strategy_cfg]}, environ={})
    return str(info.value)


async def test_a_key_stays_in_its_arm_and_detail_records_it():
    s = strategy(name="ab", weights={"cheap": 1, "smart": 1})
    first = await arms(s, keys=KEYS[:500])
    again = await arms(strategy(name="ab", weights={"cheap": 1, "smart": 1}), keys=KEYS[:500])
    assert first == again
    d = await s.decide(REQ, RoutingContext(key="user-7", candidates=NAMES))
    bucket = stable_fraction("ab", "user-7")
    assert d.detail == {"arm": d.candidate, "bucket": round(bucket, 6)}
    assert d.candidate == ("cheap" if bucket < 0.5 else "smart")
    assert d.cacheable is True
    # the salt decides the shuffle: another salt, another assignment of the same keys
    other = await arms(strategy(name="ab", salt="round-2", weights={"cheap": 1, "smart": 1}), keys=KEYS[:500])
    assert other != first


async def test_distribution_of_10000_keys_is_within_2_percent_of_weights():
    got = shares(await arms(strategy(weights={"cheap": 70, "smart": 20, "canary": 10})))
    for name, want in {"cheap": 0.7, "smart": 0.2, "canary": 0.1}.items():
        assert abs(got[name] - want) <= 0.02, (name, got)
    got = shares(await arms(strategy(weights={"cheap": 0.5, "smart": 0, "canary": 0.5})))
    assert got["smart"] == 0 and abs(got["cheap"] - 0.5) <= 0.02


async def test_not_sticky_when_asked():
    d = await strategy(weights={"cheap": 1}, sticky=False).decide(
        REQ, RoutingContext(key="k", candidates=NAMES)
    )
    assert d.candidate == "cheap" and d.cacheable is False


async def test_ramp_at_start_middle_and_end():
    s = strategy(
        weights={"cheap": 80, "canary": 20},
        ramp={"from": "cheap", "to": "smart", "start": START_ISO, "end": END},
    )
    before, at_start = await arms(s, START - 1), await arms(s, START)
    middle, end, after = await arms(s, (START + END) // 2), await arms(s, END), await arms(s, END + 10**9)
    assert before == at_start
    assert shares(at_start)["smart"] == 0 and abs(shares(at_start)["cheap"] - 0.8) <= 0.02
    assert abs(shares(middle)["cheap"] - 0.4) <= 0.02 and abs(shares(middle)["smart"] - 0.4) <= 0.02
    assert shares(end)["cheap"] == 0 and abs(shares(end)["smart"] - 0.8) <= 0.02
    assert end == after
    # keys only move cheap -> smart, never back; the canary arm does not move at all
    for k in KEYS:
        assert at_start[k] == middle[k] or (at_start[k], middle[k]) == ("cheap", "smart")
        assert middle[k] == end[k] or (middle[k], end[k]) == ("cheap", "smart")
        assert (at_start[k] == "canary") == (end[k] == "canary")
    d = await s.decide(REQ, RoutingContext(key="user-1", candidates=NAMES, now_ms=START + (END - START) // 4))
    assert d.detail["ramp"] == 0.25 and set(d.detail) == {"arm", "bucket", "ramp"}


async def test_adding_a_ramp_moves_no_key_before_it_starts_whatever_the_arm_order():
    # from/to are not the last arms: a ramp must not reorder the slices (it once did: ~20% moved)
    weights = {"smart": 10, "cheap": 80, "canary": 10}
    plain = await arms(strategy(name="c", weights=weights))
    ramped = strategy(
        name="c", weights=weights, ramp={"from": "cheap", "to": "smart", "start": START, "end": END}
    )
    assert await arms(ramped, START) == plain
    middle = await arms(ramped, (START + END) // 2)
    moved = {k for k in KEYS if middle[k] != plain[k]}
    assert all((plain[k], middle[k]) == ("cheap", "smart") for k in moved)
    assert abs(len(moved) / len(KEYS) - 0.4) <= 0.02  # half of cheap's 80%


async def test_ramp_share_moves_part_of_the_weight():
    s = strategy(
        weights={"cheap": 1},
        ramp={"from": "cheap", "to": "smart", "start": START, "end": END_ISO, "share": 0.3},
    )
    got = shares(await arms(s, END))
    assert abs(got["smart"] - 0.3) <= 0.02 and abs(got["cheap"] - 0.7) <= 0.02


def test_timestamps():
    assert to_epoch_ms(START_ISO) == START == to_epoch_ms(START) == to_epoch_ms(str(START))
    assert to_epoch_ms("2026-12-01T01:00:00+01:00") == START
    assert to_epoch_ms("2026-12-01T00:00:00") == START  # no zone: UTC
    assert to_epoch_ms(datetime(2026, 12, 1, tzinfo=UTC)) == START


def test_config_errors_name_the_field():
    assert config_error({"type": "split", "weights": {"cheap": 1, "smartt": 1}}) == (
        "strategies[0].weights.smartt: 'smartt' is not a candidate; did you mean 'smart'? (known: canary, cheap, smart)"
    )
    assert config_error({"type": "split", "weights": {"cheap": 0, "smart": 0}}) == (
        "strategies[0].weights: weights must add up to more than 0"
    )
    assert config_error({"type": "split", "weights": {"cheap": -1}}).startswith(
        "strategies[0].weights.cheap:"
    )
    assert config_error({"type": "split", "weights": {}}).startswith("strategies[0].weights:")
    ramp = {"from": "cheap", "to": "smart", "start": END_ISO, "end": START_ISO}
    assert config_error({"type": "split", "weights": {"cheap": 1}, "ramp": ramp}) == (
        "strategies[0].ramp: end (2026-12-01T00:00:00Z) must be after start (2026-12-01T10:00:00Z)"
    )
    ramp = {"from": "cheap", "to": "smart", "start": 1_764_547_200, "end": END}
    assert "not epoch milliseconds" in config_error({"type": "split", "weights": {"cheap": 1}, "ramp": ramp})
    ramp = {"from": "cheap", "to": "smrt", "start": START, "end": "yesterday"}
    assert "'yesterday' is neither an ISO 8601 timestamp" in config_error(
        {"type": "split", "weights": {"cheap": 1}, "ramp": ramp}
    )
    ramp = {"from": "cheap", "to": "smrt", "start": START, "end": END}
    assert config_error({"type": "split", "weights": {"cheap": 1}, "ramp": ramp}) == (
        "strategies[0].ramp.to: 'smrt' is not a candidate; did you mean 'smart'? (known: canary, cheap, smart)"
    )
    ramp = {"from": "smart", "to": "cheap", "start": START, "end": END}
    assert "has no weight to move" in config_error({"type": "split", "weights": {"cheap": 1}, "ramp": ramp})


async def test_built_through_the_pipeline_and_routed():
    config = parse_config(
        {
            "candidates": CANDIDATES,
            "default": "cheap",
            "strategies": [{"type": "split", "name": "canary", "weights": {"canary": 1}}],
        },
        environ={},
    )
    routed = await build_pipeline(config).route(REQ, RoutingContext(key="k", candidates=NAMES))
    assert (routed.candidate, routed.decided_by, routed.cacheable) == ("canary", "canary", True)
    assert routed.verdicts[0].detail["arm"] == "canary"
