"""kafka-limit: how close the worker's CPU per record gets to the physical floor.

One backlog of requests on one requests topic, drained four times by four consumer groups:

1. the **worker** (``router-stream run``, rule routing and the decision cache on, both candidates
   on one instant loopback model server in its own process);
2. the **floor**: the bare pass-through below that also parses each record and makes one raw
   ``aiohttp`` chat-completions call per record to the same model server (at most
   ``max_in_flight`` at once, a batch's records concurrently) before producing its two records:
   the least any router must do per record;
3. a **bare pass-through, one transactional producer per partition**: the processor's own loop
   without the handler and without a model call (read_committed consumer,
   ``getmany(max_records=max_batch)``, one task per partition batch: begin, two sends per
   record, ``send_offsets_to_transaction``, commit);
4. the same pass-through with **one transactional producer for the whole worker** (one
   transaction per ``getmany``).

The floor and pass-throughs write two records per input record with the mean key/value sizes of
the worker's responses and audit records (read back from the worker's output), to topics with
the same partition count. The worker is timed from the moment its backlog is in place (it
started on an empty topic and settled first) to its last commit; the others from their first
commit to their last. So start-up (Faust, group join, ``init_transactions``) is in none.

The figure judged: the worker's process CPU per record ÷ the floor's, target ≤ 2× (the old
"0.5× the records/s of a pass-through without a model call" sat below the floor itself and is
retired; the pass-through rows stay as information). Then a **CPU budget**: the worker's CPU per
record next to its parts measured apart in the same run (the pass-through's Kafka CPU, the
worker's own logic with an in-process model client, one model call through router-stream's
client and through raw aiohttp) and to 2× the floor.

The floor and the pass-throughs (runs 2-4) are :func:`~bench.passthrough.passthrough`, in
:mod:`bench.passthrough`; this module runs all four, reads the worker's output and reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from typing import Any

from router_stream_dev.harness import read_topic

from .common import (
    RULES_STRATEGY,
    Ctx,
    Headline,
    ModelServerProc,
    Result,
    Table,
    drain_data,
    drain_with_worker,
    fmt_load,
    health_note,
    loadavg,
    ratio,
    router_topics,
    topic_end_total,
    traffic,
    worker_config,
)
from .passthrough import DEFAULT_SIZES, passthrough
from .passthrough import baseline_only as baseline_only  # bench.routing_overhead imports it from here

NAME = "kafka-limit"
TITLE = (
    "worker CPU per record vs the floor: transactional pass-through + one raw aiohttp call (instant model)"
)
NEEDS_KAFKA = True
TARGET = 2.0  # worker CPU per record ≤ 2× the floor's


def sizes_of(records: list[Any]) -> float:
    return statistics.fmean(len(r.value or b"") for r in records) if records else 0.0


def cpu_budget(ctx: Ctx, kafka_us: float | None, worker_us: float, floor_us: float | None) -> dict[str, Any]:
    """The worker's CPU per record in parts measured apart in this run, next to the floor's and
    the budget ``TARGET`` × the floor leaves: where the µs go, and which part is over."""
    from .handler_cpu import handler_cpu_us
    from .http_client import cell

    ctx.say("CPU budget: worker logic without Kafka or HTTP (in-process instant client)")
    logic_us = handler_cpu_us([RULES_STRATEGY], n=1_000 if ctx.quick else 5_000)
    calls: dict[str, float] = {}
    with ModelServerProc(ctx.workdir, "budget", latency_ms=0) as model:
        for kind in ("router-stream client", "aiohttp"):
            r = asyncio.run(
                cell(kind, model.base_url, 64, 0.3 if ctx.quick else 1.0, 1.0 if ctx.quick else 3.0)
            )
            calls[kind] = r["cpu_ms_per_call"] * 1000
            ctx.say(f"CPU budget: model call through {kind}: {calls[kind]:,.0f} µs CPU per call")
    budget_us = TARGET * floor_us if floor_us else None
    parts = (kafka_us or 0) + logic_us + calls["router-stream client"]
    rows = [
        ["Kafka: transactional consume + 2 sends (the pass-through's own CPU)", kafka_us],
        ["worker logic: intake, rules, cache, dispatcher, response + audit JSON, metrics", logic_us],
        [
            "model call: router-stream client (httpx + its transport), instant model, 64 in flight",
            calls["router-stream client"],
        ],
        ["sum of the three parts", parts],
        ["measured: worker process CPU per record (rest: changelog, state, tasks, event loop)", worker_us],
        ["for comparison: the same call on raw aiohttp (no httpx)", calls["aiohttp"]],
        ["floor: pass-through + raw aiohttp call, measured in this run", floor_us],
        [f"budget: {TARGET:g}× the floor", budget_us],
    ]
    table = Table("CPU per record in parts, measured apart in this run (µs)", ["part", "µs"], rows)
    call = calls["router-stream client"]
    note = (
        f"CPU budget: {TARGET:g}× the floor is {budget_us or 0:,.0f} µs per record; the worker's model call "
        f"costs {call:,.0f} µs through httpx ({calls['aiohttp']:,.0f} µs on raw aiohttp), its logic "
        f"{logic_us:,.0f} µs, Kafka {kafka_us or 0:,.0f} µs; the rest of the measured {worker_us:,.0f} µs is "
        f"the changelog, state, per-record tasks and the event loop"
    )
    return {
        "table": table,
        "note": note,
        "budget_us": budget_us,
        "floor_us": floor_us,
        "kafka_us": kafka_us,
        "logic_us": logic_us,
        "call_us": calls,
        "worker_us": worker_us,
    }


def run(ctx: Ctx) -> Result:
    bootstrap = ctx.need_kafka()
    n = 3_000 if ctx.quick else int(os.environ.get("BENCH_KL_RECORDS", 24_000))
    keys = max(100, n // 15)
    res = Result(NAME, TITLE)
    prefix = ctx.prefix("kl")
    outs_pp = (f"{prefix}.pp.responses", f"{prefix}.pp.audit")
    outs_pw = (f"{prefix}.pw.responses", f"{prefix}.pw.audit")
    outs_fl = (f"{prefix}.fl.responses", f"{prefix}.fl.audit")
    extra = [*outs_pp, *outs_pw, *outs_fl]
    topics = asyncio.run(router_topics(bootstrap, prefix, ctx.partitions, extra=extra))
    ctx.created_topics += [*topics.values(), *extra]
    ctx.say(f"{ctx.partitions} partitions per topic; {n:,} requests over {keys:,} keys")
    records = traffic(n, keys, 1, prefix)
    in_bytes = statistics.fmean(len(v) for _, v in records)
    with ModelServerProc(ctx.workdir, "instant", latency_ms=0) as model:
        cfg = worker_config(ctx, prefix, model.base_url)
        load0 = loadavg()
        w = drain_with_worker(
            ctx, cfg, records, label="worker", timeout=600, model=model, settle_s=4 if ctx.quick else 8
        )
        load1 = loadavg()
        ctx.say(f"worker: {w.rate:,.0f} records/s over {w.seconds:.1f}s; reading its output back")
        responses = asyncio.run(read_topic(bootstrap, topics["responses"], timeout=180, idle=2))
        audits = asyncio.run(read_topic(bootstrap, topics["audit"], timeout=180, idle=2))
        changelog_end = asyncio.run(topic_end_total(bootstrap, topics["changelog"]))
        dead_end = asyncio.run(topic_end_total(bootstrap, topics["dead_letter"]))
        resp_size, audit_size = sizes_of(responses), sizes_of(audits)
        key_size = statistics.fmean(len(r.key or b"") for r in responses) if responses else 0
        ids = {json.loads(r.value)["request_id"] for r in responses}
        errors = sum(1 for r in responses if b'"error"' in r.value)
        if len(responses) != n or len(ids) != n:
            res.notes.append(
                f"WARNING: worker output has {len(responses):,} responses ({len(ids):,} distinct) for "
                f"{n:,} valid requests; dead-letter topic end offsets {dead_end:,}: the figures do not "
                f"measure the normal path"
            )
        sizes = (round(resp_size) or DEFAULT_SIZES["response"], round(audit_size) or DEFAULT_SIZES["audit"])
        ctx.say(
            f"worker output: {len(responses):,} responses (mean {sizes[0]} B), {len(audits):,} audit "
            f"(mean {sizes[1]} B), changelog end offsets {changelog_end:,}"
        )
        ctx.say("floor: pass-through per partition + one raw aiohttp call per record to the same model")
        load_f0 = loadavg()
        fl = asyncio.run(
            passthrough(
                bootstrap,
                topics["requests"],
                outs_fl,
                f"{prefix}-fl",
                n,
                sizes,
                per_partition=True,
                say=ctx.say,
                broker_pid=ctx.broker_pid,
                model_url=model.base_url,
                max_in_flight=cfg["worker"]["max_in_flight"],
            ),
        )
        load_f1 = loadavg()
        ctx.say(
            f"floor: {fl['rate']:,.0f} records/s, {fl['cpu_client_s'] / fl['counted'] * 1e6:,.0f} µs CPU/record"
        )

    ctx.say("pass-through, one transactional producer per partition")
    load2 = loadavg()
    pp = asyncio.run(
        passthrough(
            bootstrap,
            topics["requests"],
            outs_pp,
            f"{prefix}-pp",
            n,
            sizes,
            per_partition=True,
            say=ctx.say,
            broker_pid=ctx.broker_pid,
        )
    )
    load3 = loadavg()
    ctx.say(f"pass-through per partition: {pp['rate']:,.0f} records/s")
    ctx.say("pass-through, one transactional producer for the worker")
    pw = asyncio.run(
        passthrough(
            bootstrap,
            topics["requests"],
            outs_pw,
            f"{prefix}-pw",
            n,
            sizes,
            per_partition=False,
            say=ctx.say,
            broker_pid=ctx.broker_pid,
        )
    )
    load4 = loadavg()
    ctx.say(f"pass-through one producer: {pw['rate']:,.0f} records/s")

    def us(cpu: float | None, count: int) -> float | None:
        return cpu / count * 1e6 if cpu is not None and count else None

    def baseline_row(label: str, run: dict[str, Any], load_a: Any, load_b: Any) -> list[Any]:
        """One pass-through run's row, in the worker row's columns."""
        return [
            label,
            run["rate"],
            1e6 / run["rate"],
            us(run["cpu_client_s"], run["counted"]),
            us(run["cpu_broker_s"], run["counted"]),
            run["counted"] / max(1, run["commits"]),
            fmt_load(load_a) + " → " + fmt_load(load_b),
        ]

    wc = w.extra["counted"]
    rows = [
        [
            "router-stream worker",
            w.rate,
            1e6 / w.rate,
            us(w.cpu.get("worker"), wc),
            us(w.cpu.get("broker"), wc),
            w.commits and n / w.commits,
            fmt_load(load0) + " → " + fmt_load(load1),
        ],
        baseline_row("floor: pass-through per partition + raw aiohttp call", fl, load_f0, load_f1),
        baseline_row("pass-through, producer per partition", pp, load2, load3),
        baseline_row("pass-through, one producer", pw, load3, load4),
    ]
    res.tables.append(
        Table(
            f"{n:,} requests (mean {in_bytes:.0f} B, key {key_size:.0f} B), {keys:,} keys, "
            f"{ctx.partitions} partitions, max_batch 500",
            [
                "run",
                "records/s",
                "wall µs/rec",
                "process CPU µs/rec",
                "broker CPU µs/rec",
                "records/txn",
                "load 1/5/15 min",
            ],
            rows,
        )
    )
    r_pp, r_pw, r_fl = ratio(w.rate, pp["rate"]), ratio(w.rate, pw["rate"]), ratio(w.rate, fl["rate"])
    worker_cpu_us = us(w.cpu.get("worker"), wc)
    floor_cpu_us = us(fl["cpu_client_s"], fl["counted"])
    floor_ratio = ratio(worker_cpu_us, floor_cpu_us)

    def times(x: float | None) -> str:
        return f"{x:.2f}×" if x is not None else "-"

    res.tables.append(
        Table(
            "ratios (same run, same broker)",
            ["ratio", "value", "target"],
            [
                ["worker CPU per record / floor CPU per record", times(floor_ratio), f"≤ {TARGET}×"],
                ["worker / floor (records/s)", times(r_fl), "-"],
                ["worker / pass-through per partition, no model call (records/s)", times(r_pp), "-"],
                ["worker / pass-through one producer, no model call (records/s)", times(r_pw), "-"],
            ],
        )
    )
    res.headlines.append(
        Headline(
            "worker CPU per record / floor's (pass-through + raw aiohttp call)",
            floor_ratio,
            f"≤ {TARGET}×",
            floor_ratio is not None and floor_ratio <= TARGET,
            f"{worker_cpu_us or 0:,.0f} vs {floor_cpu_us or 0:,.0f} µs CPU per record; "
            f"{w.rate:,.0f} vs {fl['rate']:,.0f} records/s",
        )
    )
    model_cpu = w.cpu.get("model server")
    res.notes.append(
        f"the pass-through writes 2 records per input; the worker writes 2 plus its changelog "
        f"(k: state and r: dedup per request, merged per key within a batch): changelog end offsets "
        f"{changelog_end:,} incl. one commit marker per partition per transaction"
    )
    if model_cpu is not None:
        res.notes.append(
            f"the loopback model server used {model_cpu / wc * 1e6:.0f} µs CPU per record on the "
            f"same 2 cores during the worker run (it competes with worker and broker)"
        )
    calls_rate = w.extra.get("model_calls_per_s")
    if calls_rate and w.extra.get("first_commit_s") is not None:
        res.notes.append(
            f"model calls ran at {calls_rate:,.0f}/s through the window, but the first commit came "
            f"{w.extra['first_commit_s']:.1f}s after the backlog was in place: a partition batch commits "
            f"when all its records are answered, and the {ctx.partitions} partitions' batches share the "
            f"in-flight slots, so they finish together (commit latency ≈ all batches' work, not one's)"
        )
    budget = cpu_budget(ctx, us(pp["cpu_client_s"], pp["counted"]), worker_cpu_us or 0.0, floor_cpu_us)
    res.tables.append(budget.pop("table"))
    res.notes.append(budget.pop("note"))
    if worker_cpu_us:
        res.notes.append(
            f"CPU ceiling: one Python process has at most 1 core, so at {worker_cpu_us:,.0f} µs CPU per "
            f"record the worker tops out near {1e6 / worker_cpu_us:,.0f}/s even on an idle core"
        )
    res.notes.append("worker start-up: " + health_note(w.extra["startup"]))
    res.notes.append("worker during the measured window: " + health_note(w.extra["health"]))
    res.notes.append(
        f"worker RSS {w.rss_ready_mb:.0f} MB at ready → {w.rss_end_mb:.0f} MB after {n:,} records "
        f"({keys:,} keys); {errors} responses carried an error"
    )
    res.data = {
        "cpu_budget": budget,
        "n": n,
        "keys": keys,
        "partitions": ctx.partitions,
        "worker": drain_data(w),
        "pass_per_partition": pp,
        "pass_one_producer": pw,
        "sizes": sizes,
        "floor": fl,
        "floor_cpu_ratio": floor_ratio,
        "ratio_floor": r_fl,
        "ratio_pp": r_pp,
        "ratio_pw": r_pw,
        "changelog_end": changelog_end,
        "kafka_us_per_record_wall": 1e6 / pp["rate"],
        "kafka_us_per_record_cpu": pp["cpu_client_s"] / pp["counted"] * 1e6,
        "worker_us_per_record_wall": 1e6 / w.rate,
        "worker_us_per_record_cpu": worker_cpu_us or 0.0,
        "floor_us_per_record_cpu": floor_cpu_us,
    }
    return res
