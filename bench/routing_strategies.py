"""The routing benchmark's strategies: built from their configs, timed per ``decide``.

For :mod:`bench.routing_overhead`: each strategy is built from a config (the bench's own, or
the ``Example::`` block of its module's docstring, as a user would copy it) against a router
config naming its candidates, then :func:`time_decide` measures its ``decide`` (or the whole
``Pipeline.route``) in CPU µs per request over the bench's request mix or 8 KB prompts, and
:func:`sticky_precedence_costs` what the rules cost before a sticky learned decision.
"""

from __future__ import annotations

import importlib
import textwrap
import time
from typing import Any

import yaml

from router_stream_dev.demo import LONG

from .common import RULES_STRATEGY, traffic

#: strategies whose docstring has no example: the config a user would write
BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "learned": {"type": "learned", "weak": "cheap", "strong": "strong"},  # the packaged MMLU artifact
}
CANDIDATES = ("cheap", "strong")


class NoOp:
    name = "no-op"

    async def decide(self, request: Any, ctx: Any) -> None:
        return None


def docstring_example(module: Any) -> dict[str, Any] | None:
    """The first ``- type: ...`` mapping of the module docstring's ``Example::`` block."""
    doc = module.__doc__ or ""
    if "Example::" not in doc:
        return None
    block = doc.split("Example::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith(" "):
            break
        lines.append(line)
    try:
        data = yaml.safe_load(textwrap.dedent("\n".join(lines)))
    except yaml.YAMLError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return data if isinstance(data, dict) else None


def config_class(module: Any) -> Any:
    """The registered strategy config class defined in ``module``, or None."""
    from router_stream.routing.registry import STRATEGY_CONFIGS

    return next((cls for cls in STRATEGY_CONFIGS if cls.__module__ == module.__name__), None)


def router_config_for(names: set[str]) -> Any:
    from router_stream.config import RouterConfig

    cands = {
        n: {"base_url": "http://127.0.0.1:9/v1", "model": f"{n}-model"}
        for n in sorted(names | set(CANDIDATES))
    }
    return RouterConfig.model_validate({"candidates": cands, "default": "cheap"})


def build_strategy(name: str, config: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(strategy, where the config came from); raises ImportError / ValueError to skip."""
    module = importlib.import_module(f"router_stream.routing.{name}")
    cls = config_class(module)
    if cls is None:
        raise ValueError(f"router_stream.routing.{name} defines no strategy config in routing.registry")
    source = "bench config"
    if config is None:
        config = docstring_example(module)
        source = "module docstring example"
    if config is None:
        raise ValueError(f"no example config in router_stream.routing.{name}'s docstring")
    cfg = cls.model_validate(config)
    from router_stream.runtime import build_context

    names = {c for _, c in cfg.referenced_candidates()}
    return cfg.build(build_context(router_config_for(names))), source


def parsed_requests(n: int) -> list[tuple[Any, str]]:
    from router_stream.processing.intake import classify

    out = []
    for key, value in traffic(n, max(1, n // 15), 5, "rt"):
        req = classify(value)
        out.append((req, key.decode()))
    return out


def long_requests(n: int) -> list[tuple[Any, str]]:
    from router_stream.schemas import Request

    text = (LONG * 40)[:8192]
    return [
        (
            Request(request_id=f"long-{i}", prompt=f"{i} {text}", tags=["x"], fields={"lang": "en"}),
            f"customer-{i}",
        )
        for i in range(n)
    ]


async def time_decide(strategy: Any, reqs: list[tuple[Any, str]], min_s: float, pipeline: bool) -> float:
    """CPU µs per call (process time), the best of 3 rounds of ≥ ``min_s / 3`` each."""
    from router_stream.routing.base import RoutingContext
    from router_stream.routing.pipeline import Pipeline
    from router_stream.schemas import now_ms

    now = now_ms()
    ctxs = [RoutingContext(key=k, candidates=CANDIDATES, now_ms=now) for _, k in reqs]
    target = Pipeline([strategy], CANDIDATES, "cheap").route if pipeline else strategy.decide
    pairs = [(r, c) for (r, _), c in zip(reqs, ctxs)]
    for r, c in pairs[:50]:  # warm-up
        await target(r, c)
    best = float("inf")
    for _ in range(3):
        calls = 0
        started = time.process_time()
        while True:
            for r, c in pairs:
                await target(r, c)
            calls += len(pairs)
            elapsed = time.process_time() - started
            if elapsed >= min_s / 3:
                break
        best = min(best, elapsed / calls * 1e6)
    return best


async def sticky_precedence_costs(reqs: list[tuple[Any, str]], min_s: float) -> dict[str, float]:
    """CPU µs per ``Pipeline.route`` when the key's sticky decision belongs to a learned router:
    alone (nothing runs: the cost of a sticky hit), and after the bench's rules (which run on every
    request since a sticky decision never skips an earlier strategy). The difference is what that
    precedence costs per cached request."""
    from router_stream.routing.base import RoutingContext
    from router_stream.routing.pipeline import Pipeline
    from router_stream.schemas import CachedDecision, now_ms

    learned, _ = build_strategy("learned", BENCH_CONFIGS["learned"])
    rules, _ = build_strategy("rules", {**RULES_STRATEGY, "name": "rules-first"})
    now = now_ms()
    sticky = CachedDecision(candidate="cheap", decided_by=learned.name, decided_at=now)
    # requests no rule decides: the rules run and abstain, then the sticky decision applies
    plain = [
        (r, k)
        for r, k in reqs
        if await rules.decide(r, RoutingContext(key=k, candidates=CANDIDATES, now_ms=now)) is None
    ]
    ctxs = [RoutingContext(key=k, candidates=CANDIDATES, now_ms=now) for _, k in plain]
    out: dict[str, float] = {}
    for label, strategies in (
        ("sticky hit, learned alone", [learned]),
        ("sticky hit, rules then learned", [rules, learned]),
    ):
        pipeline = Pipeline(strategies, CANDIDATES, "cheap")
        best = float("inf")
        for _ in range(3):
            calls, started = 0, time.process_time()
            while True:
                for (r, _), c in zip(plain, ctxs):
                    routed = await pipeline.route(r, c, sticky)
                calls += len(plain)
                if time.process_time() - started >= min_s / 3:
                    break
            best = min(best, (time.process_time() - started) / calls * 1e6)
        assert routed.sticky == "hit", routed  # the measured path is the sticky one
        out[label] = best
    return out
