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

The strategies and their timing are :mod:`bench.routing_strategies`; the handler's parts
:mod:`bench.routing_handler_costs`.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from .common import RULES_STRATEGY, Ctx, Headline, Result, Table
from .routing_handler_costs import handler_costs
from .routing_strategies import (
    BENCH_CONFIGS,
    NoOp,
    build_strategy,
    long_requests,
    parsed_requests,
    sticky_precedence_costs,
    time_decide,
)

NAME = "routing"
TITLE = "per-request cost of each routing strategy vs the per-record Kafka cost"
NEEDS_KAFKA = False  # only when kafka-limit did not run (then the pass-through is measured here)

OPTIONAL = ("split", "keywords", "learned")
IO_STRATEGIES = ("judge", "scorer")


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
