"""micro-batching: ``batch.size`` 20 vs 1 on a 200 ms model whose calls are the scarce resource.

Two worker runs in one bench run, on the same broker, over the same backlog (the demo's traffic
mix, 10,000 records over 500 keys; ``--quick``: 1,000 over 200), against the same loopback
model server answering after L = 200 ms, rule routing sending every record to one candidate:

* **A** (baseline): the candidate with ``batch.size: 1`` (micro-batching off);
* **B**: the same candidate with ``batch.size: 20``, ``batch.timeout_ms: 50``.

Nothing else differs. Micro-batching raises throughput only when *calls* are what is scarce, as
with real providers (concurrency or connection caps, requests-per-minute limits). So the binding
constraint is made explicit and identical in both runs: the candidate's ``max_connections`` = 16
(the aiohttp connector's ``limit``, i.e. at most 16 calls in flight to the provider; the
measured maximum at the server is reported), while ``worker.max_in_flight`` = 1024 is too
large to bind. A is then bound by C / L = 16 / 0.2 s = 80 records/s, B by 20 × C / L =
1,600 records/s or by the worker's CPU, whichever is lower. With a record-count bound only
(``max_in_flight`` = C records and no connection cap) both runs would sit at C / L: B's calls
would just carry the same C records in fewer, fuller prompts.

Per run: committed records/s (drain window as in ``latency-bound``: backlog in place → last
commit), calls received by the server (its own counter, reset before each run), calls per
record, mean records per call, the p50 of ``latency_ms`` in the responses (the worker's view:
waiting for a connection and, in B, for the batch to fill, plus the 200 ms), max calls in
flight at the server, worker CPU per record. Targets: calls A / B ≥ 10×, throughput B / A ≥ 5×.

Identical per-record results: both responses topics are read back (read_committed) and
compared per ``request_id``: output, error, error kind, candidate and provider model must be
equal (target 0 differing, 0 missing). The loopback server answers a record with
``[<name>] answer to: <first 40 chars of its text>`` on both paths (alone: the last user
message; batched: each ``<record>``'s content, which for one user message is the same text), so
the answer is a function of the record alone. To make a mix-up between records of one batch
visible, every prompt starts with the record's own number (``#123: ...``): each answer is also
checked against the one expected for its own record. B's responses and audit records must carry
their batch (``id``, ``size``, ``position``), consistent between response and audit, with the
positions of each batch id covering ``0 … size-1`` exactly once; A's must carry none.

``--quick`` (1,000 records) is a smoke run: B drains in a few seconds, a handful of transactions,
so its throughput ratio is dominated by commit granularity and start of the drain window.

The backlog with the answers owed and the per-record checks are :mod:`bench.micro_batching_checks`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from router_stream_dev.harness import read_topic

from .common import (
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
    pct,
    ratio,
    router_topics,
    worker_config,
)
from .micro_batching_checks import (
    COMPARED,
    MODEL_NAME,
    answered_text,
    batch_checks,
    by_id,
    compare,
    kinds_text,
    numbered_traffic,
)

NAME = "micro-batching"
TITLE = "batch.size 20 vs 1, 200 ms model, 16 connections: model calls, throughput, identical answers"
NEEDS_KAFKA = True
TARGET = 10.0  # model calls A / B
TARGET_THROUGHPUT = 5.0  # records/s B / A
LATENCY_MS = 200.0
BATCH_SIZE = 20
BATCH_TIMEOUT_MS = 50
MAX_CONNECTIONS = 16  # the binding constraint, the same in both runs
MAX_IN_FLIGHT = 1024  # large enough not to bind
# Timeouts and deadline stay at their defaults (30 s, 120 s): calls wait for one of the
# max_connections slots in arrival order (providers/openai.py), so in A the wait is bounded by
# MAX_IN_FLIGHT / MAX_CONNECTIONS x 200 ms = 12.8 s. (Before the FIFO slots, aiohttp's pool handed
# freed connections to the newest caller; starved calls timed out and opened the breaker.)
ALWAYS = {"type": "rules", "name": "one-candidate", "rules": [{"when": "true", "then": "cheap"}]}


def run_config(ctx: Ctx, prefix: str, model_url: str, batch_size: int) -> dict[str, Any]:
    cfg = worker_config(ctx, prefix, model_url, max_in_flight=MAX_IN_FLIGHT, strategies=[ALWAYS])
    cheap = cfg["candidates"]["cheap"]
    cheap["max_connections"] = MAX_CONNECTIONS
    if batch_size > 1:
        cheap["batch"] = {"size": batch_size, "timeout_ms": BATCH_TIMEOUT_MS}
    return cfg


def one_run(
    ctx: Ctx,
    model: ModelServerProc,
    label: str,
    prefix: str,
    topics: dict[str, str],
    records: list[tuple[bytes, bytes]],
    batch_size: int,
    read_audit: bool,
) -> dict[str, Any]:
    n = len(records)
    cfg = run_config(ctx, prefix, model.base_url, batch_size)
    model.reset_stats()
    load0 = loadavg()
    w = drain_with_worker(
        ctx, cfg, records, label=label, timeout=900, model=model, settle_s=2 if ctx.quick else 6
    )
    load1 = loadavg()
    stats = model.stats()
    ctx.say(
        f"{label}: {w.rate:,.0f} records/s, {stats['calls']:,} model calls (max {stats['max_in_flight']} "
        f"in flight at the server); reading its output back"
    )
    responses = asyncio.run(
        read_topic(ctx.need_kafka(), topics["responses"], expect=n, timeout=240, idle=1.5)
    )
    resp, dup = by_id(responses)
    audit = None
    if read_audit:
        audits = asyncio.run(read_topic(ctx.need_kafka(), topics["audit"], expect=n, timeout=240, idle=1.5))
        audit, _ = by_id(audits)
    latencies = [r["latency_ms"] for r in resp.values() if r.get("latency_ms") is not None]
    cpu_worker = w.cpu.get("worker")
    counted = w.extra["counted"]
    return {
        "label": label,
        "batch_size": batch_size,
        "n": n,
        "drain": w,
        "stats": stats,
        "resp": resp,
        "responses": len(responses),
        "duplicated": dup,
        "batch": batch_checks(resp, audit),
        "latency_p50_ms": pct(latencies, 0.5),
        "latency_p99_ms": pct(latencies, 0.99),
        "cpu_us": cpu_worker / counted * 1e6 if cpu_worker is not None and counted else float("nan"),
        "model_cpu_us": (w.cpu.get("model server") or float("nan")) / counted * 1e6
        if counted
        else float("nan"),
        "load": (load0, load1),
    }


def run(ctx: Ctx) -> Result:
    bootstrap = ctx.need_kafka()
    n, keys = (1_000, 200) if ctx.quick else (10_000, 500)
    res = Result(NAME, TITLE)
    prefix_a, prefix_b = ctx.prefix("mb-a"), ctx.prefix("mb-b")
    topics_a = asyncio.run(router_topics(bootstrap, prefix_a, ctx.partitions))
    topics_b = asyncio.run(router_topics(bootstrap, prefix_b, ctx.partitions))
    ctx.created_topics += [*topics_a.values(), *topics_b.values()]
    records, expected = numbered_traffic(n, keys, 6, "mb")
    bound_a = MAX_CONNECTIONS / (LATENCY_MS / 1000)
    ctx.say(
        f"{n:,} requests over {keys:,} keys, {ctx.partitions} partitions; model {LATENCY_MS:.0f} ms per call, "
        f"max_connections {MAX_CONNECTIONS}, max_in_flight {MAX_IN_FLIGHT}: A (batch.size 1) bound C/L = "
        f"{bound_a:,.0f}/s, B (batch.size {BATCH_SIZE}) bound {BATCH_SIZE} × C/L = {BATCH_SIZE * bound_a:,.0f}/s"
    )

    with ModelServerProc(ctx.workdir, MODEL_NAME, latency_ms=LATENCY_MS) as model:
        ra = one_run(ctx, model, "A batch.size 1", prefix_a, topics_a, records, 1, read_audit=False)
        rb = one_run(
            ctx, model, f"B batch.size {BATCH_SIZE}", prefix_b, topics_b, records, BATCH_SIZE, read_audit=True
        )
    cmp = compare(ra["resp"], rb["resp"], expected)
    wa, wb = ra["drain"], rb["drain"]
    calls_a, calls_b = ra["stats"]["calls"], rb["stats"]["calls"]
    calls_ratio = ratio(calls_a, calls_b)
    speedup = ratio(wb.rate, wa.rate)
    ctx.say(
        f"calls A/B {calls_ratio or 0:.1f}×, throughput B/A {speedup or 0:.1f}×, "
        f"{cmp['differing']} differing answers"
    )

    def per_call(r: dict[str, Any]) -> float:
        return r["n"] / r["stats"]["calls"] if r["stats"]["calls"] else float("nan")

    def b_over_a(x: float | None, y: float | None) -> str:
        q = ratio(y, x)
        return "-" if q is None or q != q else f"{q:.2f}×"

    rows: list[list[Any]] = []

    def row(what: str, fa: Any, fb: Any, show_ratio: bool = True) -> None:
        both_num = isinstance(fa, (int, float)) and isinstance(fb, (int, float))
        rows.append([what, fa, fb, b_over_a(fa, fb) if show_ratio and both_num else ""])

    row("throughput, committed (records/s)", wa.rate, wb.rate)
    row("bound: C/L × records per call (records/s)", bound_a, BATCH_SIZE * bound_a)
    row("drain window (s)", wa.seconds, wb.seconds)
    row("model calls received by the server", calls_a, calls_b)
    row("calls per record", calls_a / n, calls_b / n)
    row("mean records per call (server: records / calls)", per_call(ra), per_call(rb))
    row(
        "batched calls / records in them (server)",
        f"{ra['stats']['batched_calls']:,} / {ra['stats']['batched_records']:,}",
        f"{rb['stats']['batched_calls']:,} / {rb['stats']['batched_records']:,}",
    )
    row(
        "max calls in flight at the server (cap = max_connections)",
        ra["stats"]["max_in_flight"],
        rb["stats"]["max_in_flight"],
        show_ratio=False,
    )
    row(
        "mean calls in flight at the server (sampled 1/s)",
        wa.extra.get("model_in_flight_mean", float("nan")),
        wb.extra.get("model_in_flight_mean", float("nan")),
    )
    row(
        "latency_ms p50 / p99 in the responses (ms)",
        f"{ra['latency_p50_ms']:,.0f} / {ra['latency_p99_ms']:,.0f}",
        f"{rb['latency_p50_ms']:,.0f} / {rb['latency_p99_ms']:,.0f}",
    )
    row("worker CPU per record (µs)", ra["cpu_us"], rb["cpu_us"])
    row("model server CPU per record (µs)", ra["model_cpu_us"], rb["model_cpu_us"])
    row("records per transaction", wa.commits and n / wa.commits, wb.commits and n / wb.commits)
    row(
        "load average during the run",
        fmt_load(ra["load"][0]) + " → " + fmt_load(ra["load"][1]),
        fmt_load(rb["load"][0]) + " → " + fmt_load(rb["load"][1]),
    )
    res.tables.append(
        Table(
            f"{n:,} requests, {keys:,} keys, {ctx.partitions} partitions, model {LATENCY_MS:.0f} ms, "
            f"max_connections {MAX_CONNECTIONS}, max_in_flight {MAX_IN_FLIGHT}, batch.timeout_ms {BATCH_TIMEOUT_MS}",
            ["figure", "A: batch.size 1", f"B: batch.size {BATCH_SIZE}", "B / A"],
            rows,
        )
    )

    bb, ba = rb["batch"], ra["batch"]
    res.tables.append(
        Table(
            "per-record results, read_committed, compared per request_id",
            ["check", "A", "B"],
            [
                ["responses read", ra["responses"], rb["responses"]],
                ["request ids answered more than once", ra["duplicated"], rb["duplicated"]],
                ["requests missing an answer", cmp["missing_a"], cmp["missing_b"]],
                ["responses with an error", cmp["errors_a"], cmp["errors_b"]],
                ["  by error_kind", kinds_text(cmp["error_kinds_a"]), kinds_text(cmp["error_kinds_b"])],
                ["answers not the one owed to their own record", cmp["wrong_a"], cmp["wrong_b"]],
                [f"answered in both, differing ({'/'.join(COMPARED)})", cmp["differing"], cmp["differing"]],
                ["responses carrying batch info (id, size, position)", ba["with_info"], bb["with_info"]],
                ["  of which malformed", ba["malformed"], bb["malformed"]],
                ["  answered by the batch / alone", answered_text(ba), answered_text(bb)],
                [
                    "distinct batch ids / with positions not exactly 0…size-1",
                    f"{ba['batches']} / {ba['inconsistent_batches']}",
                    f"{bb['batches']:,} / {bb['inconsistent_batches']}",
                ],
                [
                    "mean batch size over records (record-weighted)",
                    ba["record_weighted_size"],
                    bb["record_weighted_size"],
                ],
                [
                    "audit records read / batch differing from the response",
                    "-",
                    f"{bb['audits']:,} / {bb['audit_mismatch']}" if bb["audits"] is not None else "-",
                ],
            ],
        )
    )

    results_ok = (
        cmp["differing"] == 0
        and cmp["missing_a"] == 0
        and cmp["missing_b"] == 0
        and cmp["wrong_a"] == 0
        and cmp["wrong_b"] == 0
    )
    batch_ok = (
        ba["with_info"] == 0
        and bb["with_info"] == n
        and bb["malformed"] == 0
        and bb["inconsistent_batches"] == 0
        and bb["audit_mismatch"] == 0
        and bb["audits"] == n
    )
    res.headlines.append(
        Headline(
            "model calls A / B",
            calls_ratio,
            f"≥ {TARGET:g}×",
            calls_ratio is not None and calls_ratio >= TARGET,
            f"{calls_a:,} vs {calls_b:,} calls for {n:,} records",
        )
    )
    res.headlines.append(
        Headline(
            "throughput B / A",
            speedup,
            f"≥ {TARGET_THROUGHPUT:g}×",
            speedup is not None and speedup >= TARGET_THROUGHPUT,
            f"{wb.rate:,.0f} vs {wa.rate:,.0f} records/s",
        )
    )
    res.headlines.append(
        Headline(
            "request ids whose answers differ, are wrong or missing",
            cmp["bad_ids"],
            "0",
            results_ok and cmp["bad_ids"] == 0,
            f"of {n:,}; B's batch info {'complete' if batch_ok else 'INCOMPLETE'}",
        )
    )

    res.notes.append(
        f"fair comparison: same broker, same {n:,} records (same request ids, separate topics), same loopback "
        f"server at {LATENCY_MS:.0f} ms, same candidate config but batch.size. The binding constraint is "
        f"the candidate's max_connections = {MAX_CONNECTIONS} concurrent calls (as a provider's concurrency "
        f"cap would be); worker.max_in_flight = {MAX_IN_FLIGHT} does not bind. With a record-count bound "
        f"only (max_in_flight = C, no call cap) both runs would sit at C/L: B's calls would carry the same C "
        "records in fewer prompts"
    )
    cap_seen = max(ra["stats"]["max_in_flight"], rb["stats"]["max_in_flight"])
    if cap_seen > MAX_CONNECTIONS:
        res.notes.append(
            f"WARNING: the server saw {cap_seen} calls in flight, more than max_connections = "
            f"{MAX_CONNECTIONS}: the cap is not enforced as assumed"
        )
    else:
        res.notes.append(
            f"max_connections enforced: at most {cap_seen} calls in flight at the server "
            f"(cap {MAX_CONNECTIONS}); the other calls wait for a slot inside the worker, in "
            f"arrival order, and that wait is in latency_ms: A p50 {ra['latency_p50_ms']:,.0f} ms, "
            f"p99 {ra['latency_p99_ms']:,.0f} ms (default request_timeout_ms and deadline)"
        )
    if wa.rate > 1.1 * bound_a:
        res.notes.append(
            f"WARNING: A ran above its bound C/L ({wa.rate:,.0f} vs {bound_a:,.0f}/s): records were "
            "answered without a model call (errors), so A is not a valid baseline"
        )
    if cmp["examples"]:
        res.notes.append("differing examples: " + json.dumps(cmp["examples"])[:600])
    if cmp["unexpected_ids"]:
        res.notes.append(f"{cmp['unexpected_ids']} response ids not among the requests")
    cpu_b = rb["cpu_us"]
    if cpu_b == cpu_b and cpu_b > 0:
        res.notes.append(
            f"CPU ceiling for B: at {cpu_b:,.0f} µs worker CPU per record one core allows "
            f"{1e6 / cpu_b:,.0f} records/s ({1e6 / cpu_b / bound_a:.1f}× A's bound) vs the call bound "
            f"{BATCH_SIZE * bound_a:,.0f}/s; A used {ra['cpu_us']:,.0f} µs per record"
        )
    for r in (ra, rb):
        res.notes.append(
            f"{r['label']} during the measured window: " + health_note(r["drain"].extra["health"])
        )
    res.data = {
        "n": n,
        "keys": keys,
        "latency_ms": LATENCY_MS,
        "batch_size": BATCH_SIZE,
        "batch_timeout_ms": BATCH_TIMEOUT_MS,
        "max_connections": MAX_CONNECTIONS,
        "max_in_flight": MAX_IN_FLIGHT,
        "calls_ratio": calls_ratio,
        "throughput_ratio": speedup,
        "compare": cmp,
        "runs": {
            r["label"]: {
                "rate": r["drain"].rate,
                "calls": r["stats"]["calls"],
                "batch": r["batch"],
                "latency_p50_ms": r["latency_p50_ms"],
                "latency_p99_ms": r["latency_p99_ms"],
                "cpu_us": r["cpu_us"],
                "worker": drain_data(r["drain"]),
                "model_stats": {k: v for k, v in r["stats"].items() if k != "last_body"},
            }
            for r in (ra, rb)
        },
    }
    return res
