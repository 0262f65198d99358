"""The strategy registry and the shared base: every config class is registered and built one way."""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass
from typing import Any

import pytest

import router_stream.routing
from router_stream.config import parse_config
from router_stream.errors import ConfigError, FatalModelError
from router_stream.providers.openai import OpenAIChatClient
from router_stream.routing.base import RoutingContext
from router_stream.routing.judge import JudgeConfig
from router_stream.routing.optimize import OptimizeConfig
from router_stream.routing.registry import STRATEGY_CONFIGS
from router_stream.routing.strategy_config import BuildContext, StrategyConfigBase
from router_stream.runtime import build_context
from router_stream.schemas import Request


def _strategy_config_classes() -> set[type[StrategyConfigBase]]:
    """Every concrete StrategyConfigBase subclass defined in a router_stream.routing module."""
    found = set()
    for info in pkgutil.iter_modules(router_stream.routing.__path__, "router_stream.routing."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, StrategyConfigBase)
                and obj is not StrategyConfigBase
                and obj.__module__ == module.__name__
            ):
                found.add(obj)
    return found


def test_every_strategy_config_is_registered_under_its_own_tag():
    assert set(STRATEGY_CONFIGS) == _strategy_config_classes()
    tags = [typing.get_args(cls.model_fields["type"].annotation) for cls in STRATEGY_CONFIGS]
    assert all(len(tag) == 1 for tag in tags), tags  # a Literal of one value each
    assert len({tag[0] for tag in tags}) == len(tags)
    for cls, (tag,) in zip(STRATEGY_CONFIGS, tags, strict=True):
        assert cls.model_fields["name"].default == tag, cls  # an unnamed strategy is called by its type
        assert cls.model_config.get("extra") == "forbid", cls


def test_the_base_cannot_be_built_itself():
    with pytest.raises(TypeError, match="abstract"):
        StrategyConfigBase(type="x", name="x")  # type: ignore[abstract]


CANDIDATES = {
    "cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c", "price_input_per_1k": 0.001},
    "smart": {"base_url": "http://127.0.0.1:9/v1", "model": "s", "price_output_per_1k": 0.03},
    "slow": {"base_url": "http://127.0.0.1:9/v1", "model": "b", "mode": "batch"},
}


def test_build_context_of_a_router_config():
    config = parse_config({"candidates": CANDIDATES, "default": "cheap"}, environ={})
    ctx = build_context(config)
    assert ctx.names == ("cheap", "smart", "slow")  # config order
    assert ctx.prices() == {"cheap": (0.001, 0.0), "smart": (0.0, 0.03), "slow": (0.0, 0.0)}
    assert ctx.candidates["slow"].mode == "batch"
    client = ctx.client("smart")
    assert isinstance(client, OpenAIChatClient) and client.name == "smart"
    with pytest.raises(ConfigError, match="'nope' is not a candidate"):
        ctx.client("nope")
    with pytest.raises(ConfigError, match="built without a way to call candidates"):
        BuildContext(candidates=config.candidates).client("cheap")


@dataclass(frozen=True)
class Terms:
    """A candidate as a test describes it: anything with prices and a mode fits a BuildContext."""

    price_input_per_1k: float = 0.0
    price_output_per_1k: float = 0.0
    mode: str = "online"


class FailingClient:
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, call: Any) -> Any:
        self.calls += 1
        raise FatalModelError("400", kind="client_error", status=400)

    async def aclose(self) -> None:
        pass


async def test_the_judge_opens_its_client_through_the_context_on_first_use_only():
    opened: list[str] = []
    client = FailingClient()

    def open_client(name: str) -> FailingClient:
        opened.append(name)
        return client

    ctx = BuildContext(candidates={"cheap": Terms(), "smart": Terms()}, open_client=open_client)
    judge = JudgeConfig(type="judge", candidate="cheap").build(ctx)
    assert opened == []  # building calls nothing
    routing = RoutingContext(key="k", candidates=("cheap", "smart"))
    for _ in range(2):
        assert await judge.decide(Request(request_id="r", prompt="hi"), routing) is None
    assert opened == ["cheap"] and client.calls == 2


def test_optimize_by_price_names_the_candidates_it_has_no_price_for():
    config = OptimizeConfig(type="optimize", by="price", candidates=["cheap", "gone"])
    with pytest.raises(ValueError, match="needs the prices of gone"):
        config.build(BuildContext(candidates={"cheap": Terms(price_input_per_1k=1.0)}))
    strategy = config.model_copy(update={"candidates": ["cheap"]}).build(
        BuildContext(candidates={"cheap": Terms(price_input_per_1k=1.0)})
    )
    assert strategy.prices == {"cheap": 1.0}  # 1000 expected input tokens at 1.0 per 1k


def test_a_cascade_refuses_the_cache_setting_every_other_strategy_has():
    strategy = {
        "type": "cascade",
        "candidates": ["cheap", "smart"],
        "validator": {"type": "min_length", "chars": 3},
    }
    parse_config({"candidates": CANDIDATES, "default": "cheap", "strategies": [strategy]}, environ={})
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "candidates": CANDIDATES,
                "default": "cheap",
                "strategies": [{**strategy, "cache": {"ttl_s": 5}}],
            },
            environ={},
        )
    assert str(info.value) == (
        "strategies[0].cache: a cascade's decisions are never cached (each request runs its own cascade); "
        "remove cache"
    )
