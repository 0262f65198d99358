"""latency-bound: with a slow model, does the worker keep ``max_in_flight`` calls busy?

A loopback model answering after L = 200 ms, a backlog over 1,000 keys, one worker with
``worker.max_in_flight`` = C. Little's law bounds throughput at C / L (256 / 0.2 s = 1,280/s);
the ratio measured / bound is the share of the concurrency budget the worker actually uses
(target ≥ 0.8). C is swept (64, 128, 256, 512; ``BENCH_LB_C`` overrides), each with a fresh
worker and about 20 s of backlog at its bound: at small C the figure measures the worker's
scheduling (slots, same-key chains, commits), at large C it runs into the CPU of one Python
process. Each candidate's ``max_connections`` is set to C, as an operator raising
``max_in_flight`` past the default pool (256 connections per candidate) must: otherwise at
C = 512 the pool of the candidate serving most requests, not the worker, is the bound.
Per-key order is part of the contract, so it is checked on the way: each request carries its
key's produce sequence number (in ``request_id``, ``fields`` and the prompt, which the model
echoes), and in the read_committed responses topic every key's sequence must rise with the
offset, with every request answered exactly once and by its own answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections import defaultdict
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

NAME = "latency-bound"
TITLE = "throughput with a 200 ms model vs Little's bound C/L, per-key order"
NEEDS_KAFKA = True
TARGET = 0.8
LATENCY_MS = 200.0
KEYS = 1000
CONCURRENCIES = (64, 128, 256, 512)


def sequenced_traffic(n: int, keys: int, seed: int, prefix: str) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    seq = [0] * keys
    out = []
    for i in range(n):
        k = rng.randrange(keys)
        seq[k] += 1
        s = seq[k]
        body = {
            "request_id": f"{prefix}-{k}-{s}",
            "prompt": f"k{k} s{s} what is {i % 97} + {s % 89}?",
            "fields": {"key_seq": s, "seq": i},
        }
        if i % 7 == 0:
            body["tags"] = ["legal"]
        out.append((f"key-{k}".encode(), json.dumps(body).encode()))
    return out


def check_order(records: list[Any], n: int) -> dict[str, Any]:
    """Per key: sequence numbers rise with (partition, offset); every id once; answer matches."""
    by_key: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
    ids: dict[str, int] = defaultdict(int)
    mismatched = errors = 0
    latencies = []
    partitions_per_key: dict[bytes, set[int]] = defaultdict(set)
    for r in records:
        body = json.loads(r.value)
        rid = body["request_id"]
        ids[rid] += 1
        k, s = rid.rsplit("-", 2)[-2:]
        if body.get("error"):
            errors += 1
        elif f"k{k} s{s} " not in (body.get("output") or ""):
            mismatched += 1
        if body.get("latency_ms") is not None:
            latencies.append(body["latency_ms"])
        by_key[r.key].append((r.partition, r.offset, int(s)))
        partitions_per_key[r.key].add(r.partition)
    violations = 0
    keys_out_of_order = 0
    for items in by_key.values():
        items.sort()
        seqs = [s for _, _, s in items]
        bad = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        violations += bad
        keys_out_of_order += bad > 0
    return {
        "responses": len(records),
        "distinct_ids": len(ids),
        "missing": n - len(ids),
        "duplicated": sum(1 for c in ids.values() if c > 1),
        "order_violations": violations,
        "keys_out_of_order": keys_out_of_order,
        "keys": len(by_key),
        "keys_split_across_partitions": sum(1 for p in partitions_per_key.values() if len(p) > 1),
        "answer_mismatch": mismatched,
        "errors": errors,
        "model_latency_p50_ms": pct(latencies, 0.5),
        "model_latency_p99_ms": pct(latencies, 0.99),
    }


def concurrencies() -> tuple[int, ...]:
    """The in-flight bounds C to sweep: ``BENCH_LB_C="64,256"`` overrides the default."""
    raw = os.environ.get("BENCH_LB_C")
    return tuple(int(x) for x in raw.split(",") if x.strip()) if raw else CONCURRENCIES


def _one(ctx: Ctx, concurrency: int) -> dict[str, Any]:
    """One worker with ``max_in_flight`` = C draining ~20 s worth of backlog at the bound."""
    bootstrap = ctx.need_kafka()
    bound = concurrency / (LATENCY_MS / 1000)
    n = int(bound * (3 if ctx.quick else 20)) // 100 * 100
    prefix = ctx.prefix(f"lb{concurrency}")
    topics = asyncio.run(router_topics(bootstrap, prefix, ctx.partitions))
    ctx.created_topics += list(topics.values())
    ctx.say(
        f"C = {concurrency}: {n:,} requests over {KEYS:,} keys (per-key sequence numbers), "
        f"{ctx.partitions} partitions; bound C/L = {concurrency}/{LATENCY_MS / 1000:g}s = {bound:,.0f}/s"
    )
    records = sequenced_traffic(n, KEYS, 2, prefix)
    with ModelServerProc(ctx.workdir, f"slow{concurrency}", latency_ms=LATENCY_MS) as model:
        cfg = worker_config(
            ctx, prefix, model.base_url, max_in_flight=concurrency, max_connections=concurrency
        )
        load0 = loadavg()
        w = drain_with_worker(
            ctx,
            cfg,
            records,
            label=f"worker-c{concurrency}",
            timeout=900,
            model=model,
            settle_s=4 if ctx.quick else 8,
        )
        load1 = loadavg()
        stats = model.stats()
    ctx.say(
        f"C = {concurrency}: {w.rate:,.0f} records/s ({w.rate / bound:.2f} of the bound); checking per-key order"
    )
    responses = asyncio.run(read_topic(bootstrap, topics["responses"], timeout=240, idle=2))
    order = check_order(responses, n)
    cpu_us = (w.cpu.get("worker") or 0) / w.extra["counted"] * 1e6
    return {
        "n": n,
        "keys": KEYS,
        "concurrency": concurrency,
        "latency_ms": LATENCY_MS,
        "bound": bound,
        "rate": w.rate,
        "ratio": ratio(w.rate, bound),
        "order": order,
        "mean_in_flight": w.extra.get("model_in_flight_mean", float("nan")),
        "cpu_us": cpu_us,
        "load": fmt_load(load0) + " → " + fmt_load(load1),
        "worker": drain_data(w),
        "drain": w,
        "model_stats": {k: v for k, v in stats.items() if k != "last_body"},
    }


def run(ctx: Ctx) -> Result:
    res = Result(NAME, TITLE)
    runs = [_one(ctx, c) for c in concurrencies()]
    rows = []
    for r in runs:
        w, o = r["drain"], r["order"]
        rows.append(
            [
                r["concurrency"],
                r["n"],
                r["bound"],
                r["rate"],
                f"{r['ratio']:.2f}",
                f"{r['mean_in_flight'] / r['concurrency']:.2f}",
                f"{o['model_latency_p50_ms']:.0f} / {o['model_latency_p99_ms']:.0f}",
                r["cpu_us"],
                f"{r['bound'] * TARGET * r['cpu_us'] / 1e6:.2f}",
                w.extra.get("first_commit_s"),
                w.commits and r["n"] / w.commits,
                r["load"],
            ]
        )
    res.tables.append(
        Table(
            f"model latency {LATENCY_MS:.0f} ms, {KEYS:,} keys, {ctx.partitions} partitions, one worker with "
            "max_in_flight = C",
            [
                "C",
                "requests",
                "bound C/L (rec/s)",
                "records/s",
                "÷ bound",
                "in flight at model ÷ C",
                "latency p50/p99 ms",
                "worker CPU µs/rec",
                f"cores for {TARGET:g}×C/L",
                "first commit (s)",
                "records/txn",
                "load 1/5/15 min",
            ],
            rows,
        )
    )
    res.tables.append(
        Table(
            "per-key order and exactly-once in the read_committed responses",
            [
                "C",
                "responses",
                "missing",
                "answered twice",
                "per-key order violations",
                "keys with a violation",
                "answer mismatches",
                "errors",
            ],
            [
                [
                    r["concurrency"],
                    r["order"]["responses"],
                    r["order"]["missing"],
                    r["order"]["duplicated"],
                    r["order"]["order_violations"],
                    r["order"]["keys_out_of_order"],
                    r["order"]["answer_mismatch"],
                    r["order"]["errors"],
                ]
                for r in runs
            ],
        )
    )
    for r in runs:
        res.headlines.append(
            Headline(
                f"throughput / Little's bound C/L, C = {r['concurrency']}",
                r["ratio"],
                f"≥ {TARGET}",
                r["ratio"] is not None and r["ratio"] >= TARGET,
                f"{r['rate']:,.0f} vs {r['bound']:,.0f} records/s",
            )
        )
    bad = sum(
        r["order"]["order_violations"]
        + r["order"]["missing"]
        + r["order"]["duplicated"]
        + r["order"]["answer_mismatch"]
        for r in runs
    )
    res.headlines.append(
        Headline(
            "per-key order and exactly-once violations",
            float(bad),
            "0",
            bad == 0,
            f"{sum(r['n'] for r in runs):,} requests, {KEYS:,} keys, {len(runs)} runs",
        )
    )
    for r in runs:
        w = r["drain"]
        res.notes.append(
            f"C = {r['concurrency']}: worker start-up {health_note(w.extra['startup'])}; "
            f"during the window {health_note(w.extra['health'])}"
        )
    res.notes.append(
        "in flight at model ÷ C: the model server's concurrent calls (sampled 1/s) over the bound; "
        "slots sit idle when the worker cannot issue calls fast enough (CPU), and in same-key "
        "chains and batch tails. Latency above 200 ms is time the answer waited for the worker's "
        "event loop"
    )
    res.notes.append(
        f"cores for {TARGET:g}×C/L = worker CPU per record × {TARGET:g} × C/L: one Python process has "
        "at most 1 core, and here it shares 2 with the loopback model server and the broker, so the "
        "ratio falls once that nears ~0.7"
    )
    last = runs[-1]
    res.data = {
        **{k: v for k, v in last.items() if k != "drain"},
        "sweep": [{k: v for k, v in r.items() if k != "drain"} for r in runs],
    }
    return res
