"""routing: what a routing decision costs per request, next to what Kafka costs per record.

Each strategy module present in ``router_stream/routing/`` (rules always; ``split``,
``keywords``, ``learned`` when they exist: imported lazily, skipped with a note otherwise) is
built from a config (the module's own ``Example::`` block, or the bench's rules) and its
``decide`` is awaited in a loop over parsed requests, in one event loop, with a no-op strategy as
the floor of an ``await`` and the pipeline (``Pipeline.route``, verdicts included) on top. Costs
are CPU time (``time.process_time``), so a busy machine's descheduling does not inflate them.
Shares are against the per-record cost of the bare transactional pass-through measured by
``kafka-limit`` in this run (wall time per record and the client's CPU per record).

A second table splits the worker's CPU per record: intake, routing, the handler without its
model call (an instant in-process dispatcher), the JSON of response and audit, plus the model
call's client CPU (``http-client``) and the Kafka cost (``kafka-limit``), against the worker's
measured CPU per record (``kafka-limit``).
"""

from __future__ import annotations

import asyncio
import importlib
import textwrap
import time
from typing import Any

import yaml

from router_stream_dev.demo import LONG

from .common import RULES_STRATEGY, Ctx, Headline, Result, Table, traffic

NAME = "routing"
TITLE = "per-request cost of each routing strategy vs the per-record Kafka cost"
NEEDS_KAFKA = False  # only when kafka-limit did not run (then the pass-through is measured here)

OPTIONAL = ("split", "keywords", "learned")
#: strategies whose docstring has no example: the config a user would write
BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "learned": {"type": "learned", "weak": "cheap", "strong": "strong"},  # the packaged MMLU artifact
}
IO_STRATEGIES = ("judge", "scorer")
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


class InstantClient:
    """A :class:`ModelClient` that answers at once, in process (no HTTP)."""

    async def complete(self, call: Any) -> Any:
        from router_stream.providers.base import Completion
        from router_stream.schemas import Usage

        return Completion(
            text="[bench] answer",
            provider_model="bench-model",
            usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17),
            latency_ms=0.01,
        )

    async def aclose(self) -> None:
        pass


class InstantDispatcher:
    """Answers at once, in process: the handler's cost without an HTTP call."""

    async def call(self, request: Any, chosen: str, deadline_at: float) -> Any:
        from router_stream.providers.base import Completion
        from router_stream.providers.resilience import CallResult
        from router_stream.schemas import Attempt, Usage

        return CallResult(
            Completion(
                text=f"[{chosen}] answer",
                provider_model=f"{chosen}-model",
                usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17),
                latency_ms=0.1,
            ),
            chosen,
            [Attempt(candidate=chosen, outcome="ok", latency_ms=0.1, status=200)],
            cost_usd=1e-5,
        )


async def _best_cpu_us(fn: Any, items: list[Any], repeats: int = 3) -> float:
    """CPU µs per item of ``await fn(chunk)``, the best of ``repeats`` chunks."""
    chunk = max(1, len(items) // repeats)
    best = float("inf")
    for r in range(repeats):
        part = items[r * chunk : (r + 1) * chunk]
        t = time.process_time()
        await fn(part)
        best = min(best, (time.process_time() - t) / len(part))
    return best * 1e6


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


async def handler_costs(n: int) -> dict[str, float]:
    """CPU µs per record: intake, pipeline (rules), handler w/o model call, the dispatcher around
    an instant in-process client, response+audit JSON. Each the best of 3 chunks, after a warm-up."""
    from router_stream.config import parse_config
    from router_stream.metrics import MetricsObserver
    from router_stream.processing.handler import Handler, Source, StateView
    from router_stream.processing.intake import classify
    from router_stream.providers.resilience import Dispatcher
    from router_stream.routing.base import RoutingContext
    from router_stream.runtime import build_pipeline

    config = parse_config(
        {
            "candidates": {
                c: {"base_url": "http://127.0.0.1:9/v1", "model": f"{c}-model", "context_window": 32000}
                for c in CANDIDATES
            },
            "default": "cheap",
            "strategies": [RULES_STRATEGY],
        },
        environ={},
    )
    pipeline = build_pipeline(config)
    handler = Handler(config, pipeline, InstantDispatcher(), "bench")
    dispatcher = Dispatcher(
        config, clients={c: InstantClient() for c in CANDIDATES}, observer=MetricsObserver()
    )
    records = traffic(n + 100, max(1, n // 15), 9, "hc")
    sources = [Source("t", 0, i, k, v) for i, (k, v) in enumerate(records)]
    warm, sources = sources[:100], sources[100:]
    out: dict[str, float] = {}

    async def intake(part: list[Any]) -> None:
        for s in part:
            classify(s.value, 1_000_000, 32000)

    async def route(part: list[Any]) -> None:
        for s in part:
            await pipeline.route(classify(s.value), RoutingContext(key=s.key.decode(), candidates=CANDIDATES))

    await intake(warm)
    await route(warm)
    intake_us = await _best_cpu_us(intake, sources)
    out["intake (classify)"] = intake_us
    out["routing (Pipeline.route, rules) when it runs"] = await _best_cpu_us(route, sources) - intake_us

    outcomes: list[Any] = []
    store: dict[bytes, bytes | None] = {}

    async def handle(part: list[Any]) -> None:
        for i in range(0, len(part), 500):  # one StateView per 500-record batch, as the processor does
            view = StateView(store)
            for s in part[i : i + 500]:
                outcomes.append(await handler.handle(s, view))
            store.update(view.pending)

    await handle(warm)
    outcomes.clear()
    handler_us = await _best_cpu_us(handle, sources)
    hits = sum(1 for o in outcomes if o.audit is not None and o.audit.cache_hit)
    out[
        f"handler without the model call ({hits / max(1, len(outcomes)):.0%} decision-cache hits skip routing)"
    ] = handler_us

    from router_stream.schemas import Request

    requests = [r for s in sources if isinstance(r := classify(s.value), Request)]

    async def dispatch(part: list[Any]) -> None:
        for r in part:
            await dispatcher.call(r, "cheap", time.monotonic() + 30)

    async def instant(part: list[Any]) -> None:
        client = InstantClient()
        for r in part:
            await client.complete(r)

    await dispatch(requests[:50])
    out["dispatcher around the call (retries, breaker, limits; instant client)"] = await _best_cpu_us(
        dispatch, requests
    ) - await _best_cpu_us(instant, requests)

    async def serialize(part: list[Any]) -> None:
        for o in part:
            for record in (o.response, o.audit, o.dead_letter):
                if record is not None:
                    record.model_dump_json(exclude_none=True).encode()

    out["response + audit JSON (commit side)"] = await _best_cpu_us(serialize, outcomes)
    out["_dead_letters"] = float(sum(1 for o in outcomes if o.dead_letter is not None))
    return out


def run(ctx: Ctx) -> Result:
    res = Result(NAME, TITLE)
    min_s = 0.3 if ctx.quick else 1.5
    kl = ctx.results.get("kafka-limit")
    if kl is not None and kl.data:
        kafka_wall, kafka_cpu = kl.data["kafka_us_per_record_wall"], kl.data["kafka_us_per_record_cpu"]
        worker_cpu = kl.data.get("worker_us_per_record_cpu")
        source = "kafka-limit in this run"
    elif ctx.bootstrap:
        from .kafka_limit import baseline_only

        ctx.say("kafka-limit did not run: measuring the bare pass-through here (5,000 records)")
        bl = baseline_only(ctx, 5_000)
        kafka_wall, kafka_cpu, worker_cpu = 1e6 / bl["rate"], bl["cpu_client_s"] / bl["counted"] * 1e6, None
        source = "pass-through measured here"
    else:
        kafka_wall = kafka_cpu = worker_cpu = None
        source = "no broker"

    mixes = {"bench mix": parsed_requests(2000), "8 KB prompts": long_requests(200)}
    strategies: list[tuple[str, Any, str]] = [("no-op (floor of an await)", NoOp(), "-")]
    strategies.append(("rules", *build_strategy("rules", RULES_STRATEGY)))
    for name in OPTIONAL:
        try:
            strategy, origin = build_strategy(name, BENCH_CONFIGS.get(name))
        except ImportError:
            res.notes.append(f"{name}: no router_stream/routing/{name}.py in this tree; skipped")
            continue
        except Exception as exc:
            res.notes.append(
                f"{name}: present but could not be built ({type(exc).__name__}: {str(exc)[:160]}); skipped"
            )
            continue
        strategies.append((name, strategy, origin))
    present_io = [
        n for n in IO_STRATEGIES if importlib.util.find_spec(f"router_stream.routing.{n}") is not None
    ]
    if present_io:
        res.notes.append(
            f"{', '.join(present_io)}: present, not timed here: each decision is one HTTP call (its "
            "cost is a model call's, see http-client), made once per key while the decision cache holds"
        )

    rows = []
    figures: dict[str, dict[str, float]] = {}
    for label, strategy, origin in strategies:
        fig = {}
        for mix, reqs in mixes.items():
            fig[f"decide/{mix}"] = asyncio.run(time_decide(strategy, reqs, min_s, pipeline=False))
            if label.startswith("no-op"):
                continue
            fig[f"route/{mix}"] = asyncio.run(time_decide(strategy, reqs, min_s, pipeline=True))
        figures[label] = fig
        d = fig["decide/bench mix"]
        ctx.say(f"{label}: decide {d:.1f} µs (bench mix), {fig['decide/8 KB prompts']:.1f} µs (8 KB prompts)")
        rows.append(
            [
                label,
                origin,
                d,
                fig.get("route/bench mix"),
                fig["decide/8 KB prompts"],
                fig.get("route/8 KB prompts"),
                f"{d / kafka_wall:.1%}" if kafka_wall else "-",
                f"{d / kafka_cpu:.1%}" if kafka_cpu else "-",
            ]
        )
    res.tables.append(
        Table(
            f"CPU µs per request (one event loop); Kafka per record: {kafka_wall or float('nan'):.0f} µs wall, "
            f"{kafka_cpu or float('nan'):.0f} µs client CPU ({source})",
            [
                "strategy",
                "config",
                "decide µs",
                "Pipeline.route µs",
                "decide µs 8 KB",
                "route µs 8 KB",
                "decide ÷ Kafka wall",
                "decide ÷ Kafka CPU",
            ],
            rows,
        )
    )

    sp = asyncio.run(sticky_precedence_costs(mixes["bench mix"], min_s))
    extra = sp["sticky hit, rules then learned"] - sp["sticky hit, learned alone"]
    res.tables.append(
        Table(
            "a sticky decision never skips an earlier strategy: Pipeline.route CPU µs per cached request",
            ["pipeline (the key's sticky decision is the learned router's)", "µs"],
            [[k, v] for k, v in sp.items()],
        )
    )
    res.headlines.append(
        Headline(
            "precedence: rules run before a sticky learned decision (extra µs per request)",
            extra,
            "report",
            None,
            f"{extra:.1f} µs" + (f" = {extra / kafka_wall:.1%} of Kafka per record" if kafka_wall else ""),
        )
    )

    ctx.say("handler cost without the model call (in process)")
    hc = asyncio.run(handler_costs(1000 if ctx.quick else 5000))
    dead = int(hc.pop("_dead_letters"))
    if dead:
        res.notes.append(
            f"WARNING: the handler turned {dead:,} valid requests into dead letters (see the log above): "
            "the handler figures do not measure the normal path"
        )
    hr = ctx.results.get("http-client")
    http_cpu = hr.data.get("cpu_ms_per_call_router_client_instant_64") * 1000 if hr and hr.data else None
    budget = [
        [
            "Kafka: read_committed consume + 2 transactional sends (pass-through client CPU)",
            kafka_cpu,
            "kafka-limit",
        ]
    ]
    budget += [[k, v, "in process"] for k, v in hc.items()]
    budget.append(
        [
            "model call: router-stream client, instant model, 64 in flight (client CPU)",
            http_cpu,
            "http-client",
        ]
    )
    handler_key = next(k for k in hc if k.startswith("handler without"))
    dispatcher_key = next(k for k in hc if k.startswith("dispatcher"))
    parts = [
        kafka_cpu,
        hc[handler_key],
        hc[dispatcher_key],
        hc["response + audit JSON (commit side)"],
        http_cpu,
    ]
    known = sum(p for p in parts if p is not None)
    budget.append(
        [
            "sum (Kafka + handler + dispatcher + JSON + model call; intake and routing are inside the handler)",
            known,
            "" if None not in parts else "incomplete",
        ]
    )
    budget.append(["measured: worker CPU per record", worker_cpu, "kafka-limit"])
    res.tables.append(Table("where a record's CPU goes (µs per record)", ["part", "µs", "from"], budget))
    if worker_cpu and None not in parts:
        res.notes.append(
            f"the parts explain {known / worker_cpu:.0%} of the worker's measured CPU per record; "
            "the rest "
            "is the processor (tasks, grouping, a second JSON parse per record), its extra Kafka writes "
            "(changelog, ~1.5x the pass-through's sends), Faust's own services and HTTP under 256 "
            "concurrent connections (see http-client: CPU per call rises with concurrency)"
        )
    rules_share = figures["rules"]["decide/bench mix"] / kafka_wall if kafka_wall else None
    res.headlines.append(
        Headline(
            "rules decide ÷ Kafka per-record cost (wall)",
            rules_share,
            "report",
            None,
            f"{figures['rules']['decide/bench mix']:.1f} µs vs {kafka_wall or float('nan'):.0f} µs",
        )
    )
    for label in figures:
        if label not in ("rules",) and not label.startswith("no-op") and kafka_wall:
            res.headlines.append(
                Headline(
                    f"{label} decide ÷ Kafka per-record cost (wall)",
                    figures[label]["decide/bench mix"] / kafka_wall,
                    "report",
                    None,
                    f"{figures[label]['decide/bench mix']:.1f} µs",
                )
            )
    res.data = {
        "figures": figures,
        "kafka_us_wall": kafka_wall,
        "kafka_us_cpu": kafka_cpu,
        "handler": hc,
        "http_cpu_us": http_cpu,
        "worker_cpu_us": worker_cpu,
        "sticky_precedence": sp,
    }
    return res
