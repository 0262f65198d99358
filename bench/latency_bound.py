"""latency-bound: with a slow model, does the worker keep ``max_in_flight`` calls busy?

A loopback model answering after L = 200 ms, a backlog over 1,000 keys, one worker with
``worker.max_in_flight`` = C. Little's law bounds throughput at C / L (256 / 0.2 s = 1,280/s);
the ratio measured / bound is the share of the concurrency budget the worker actually uses
(target ≥ 0.8). Per-key order is part of the contract, so it is checked on the way: each request
carries its key's produce sequence number (in ``request_id``, ``fields`` and the prompt, which
the model echoes), and in the read_committed responses topic every key's sequence must rise
with the offset, with every request answered exactly once and by its own answer.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from typing import Any

from router_stream.devtools.harness import read_topic

from .common import (Ctx, Headline, ModelServerProc, Result, Table, drain_data, drain_with_worker, fmt_load,
                     health_note, loadavg, pct, ratio, router_topics, worker_config)

NAME = "latency-bound"
TITLE = "throughput with a 200 ms model vs Little's bound C/L, per-key order"
NEEDS_KAFKA = True
TARGET = 0.8
LATENCY_MS = 200.0
KEYS = 1000


def sequenced_traffic(n: int, keys: int, seed: int, prefix: str) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    seq = [0] * keys
    out = []
    for i in range(n):
        k = rng.randrange(keys)
        seq[k] += 1
        s = seq[k]
        body = {"request_id": f"{prefix}-{k}-{s}", "prompt": f"k{k} s{s} what is {i % 97} + {s % 89}?",
                "fields": {"key_seq": s, "seq": i}}
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
    for key, items in by_key.items():
        items.sort()
        seqs = [s for _, _, s in items]
        bad = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
        violations += bad
        keys_out_of_order += bad > 0
    return {"responses": len(records), "distinct_ids": len(ids), "missing": n - len(ids),
            "duplicated": sum(1 for c in ids.values() if c > 1), "order_violations": violations,
            "keys_out_of_order": keys_out_of_order, "keys": len(by_key),
            "keys_split_across_partitions": sum(1 for p in partitions_per_key.values() if len(p) > 1),
            "answer_mismatch": mismatched, "errors": errors,
            "model_latency_p50_ms": pct(latencies, 0.5), "model_latency_p99_ms": pct(latencies, 0.99)}


def run(ctx: Ctx, concurrency: int = 256) -> Result:
    bootstrap = ctx.need_kafka()
    bound = concurrency / (LATENCY_MS / 1000)
    n = 4_000 if ctx.quick else 25_000
    res = Result(NAME, TITLE)
    prefix = ctx.prefix("lb")
    topics = asyncio.run(router_topics(bootstrap, prefix, ctx.partitions))
    ctx.created_topics += list(topics.values())
    ctx.say(f"{n:,} requests over {KEYS:,} keys (per-key sequence numbers), {ctx.partitions} partitions; "
            f"bound C/L = {concurrency}/{LATENCY_MS / 1000:g}s = {bound:,.0f}/s")
    records = sequenced_traffic(n, KEYS, 2, prefix)

    with ModelServerProc(ctx.workdir, "slow", latency_ms=LATENCY_MS) as model:
        cfg = worker_config(ctx, prefix, model.base_url, max_in_flight=concurrency)
        load0 = loadavg()
        w = drain_with_worker(ctx, cfg, records, label="worker", timeout=900, model=model,
                              settle_s=4 if ctx.quick else 8)
        load1 = loadavg()
        stats = model.stats()
    ctx.say(f"worker: {w.rate:,.0f} records/s ({w.rate / bound:.2f} of the bound); checking per-key order")
    responses = asyncio.run(read_topic(bootstrap, topics["responses"], timeout=240, idle=2))
    order = check_order(responses, n)
    mean_in_flight = w.extra.get("model_in_flight_mean", float("nan"))
    r = ratio(w.rate, bound)
    res.tables.append(Table(
        f"{n:,} requests, {KEYS:,} keys, model latency {LATENCY_MS:.0f} ms, max_in_flight {concurrency}, "
        f"{ctx.partitions} partitions", ["figure", "value"], [
            ["throughput (records/s)", w.rate],
            ["Little's bound C/L (records/s)", bound],
            ["throughput / bound", f"{r:.2f}"],
            ["model calls/s during the window (as they happen; commits come in bursts)",
             w.extra.get("model_calls_per_s")],
            ["first commit after the backlog was in place (s)", w.extra.get("first_commit_s")],
            ["mean calls in flight at the model (sampled 1/s)", mean_in_flight],
            ["max calls in flight at the model", stats.get("max_in_flight")],
            ["model calls received", stats.get("calls")],
            ["model latency p50 / p99 seen by the worker (ms)",
             f"{order['model_latency_p50_ms']:.0f} / {order['model_latency_p99_ms']:.0f}"],
            ["worker CPU per record (µs)", (w.cpu.get("worker") or 0) / w.extra["counted"] * 1e6],
            ["records per transaction", w.commits and n / w.commits],
            ["load average during the run", fmt_load(load0) + " → " + fmt_load(load1)],
        ]))
    res.tables.append(Table("per-key order and exactly-once in the read_committed responses", ["check", "count"], [
        ["responses read", order["responses"]],
        ["requests missing an answer", order["missing"]],
        ["request ids answered more than once", order["duplicated"]],
        ["per-key sequence violations (later seq before earlier)", order["order_violations"]],
        ["keys with any violation", order["keys_out_of_order"]],
        ["answers not matching their request", order["answer_mismatch"]],
        ["responses with an error", order["errors"]],
    ]))
    order_ok = (order["missing"] == 0 and order["duplicated"] == 0 and order["order_violations"] == 0
                and order["answer_mismatch"] == 0)
    res.headlines.append(Headline("throughput / Little's bound C/L", r, f"≥ {TARGET}", r is not None and r >= TARGET,
                                  f"{w.rate:,.0f} vs {bound:,.0f} records/s"))
    res.headlines.append(Headline("per-key order and exactly-once violations",
                                  float(order["order_violations"] + order["missing"] + order["duplicated"]
                                        + order["answer_mismatch"]),
                                  "0", order_ok, f"{order['keys']:,} keys checked"))
    res.notes.append("worker start-up: " + health_note(w.extra["startup"]))
    res.notes.append("worker during the measured window: " + health_note(w.extra["health"]))
    cpu_us = (w.cpu.get("worker") or 0) / w.extra["counted"] * 1e6
    res.notes.append(f"mean in flight / C = {mean_in_flight / concurrency:.2f}; server-side Little check: "
                     f"{mean_in_flight:.0f} in flight / {LATENCY_MS / 1000:g} s = "
                     f"{mean_in_flight / LATENCY_MS * 1000:,.0f}/s vs {w.rate:,.0f}/s committed. Slots sit idle "
                     "when the worker cannot issue calls fast enough (CPU), and in same-key chains and batch tails")
    if cpu_us:
        need = TARGET * bound * cpu_us / 1e6
        res.notes.append(f"CPU ceiling: at {cpu_us:,.0f} µs CPU per record, {TARGET:g} × C/L = "
                         f"{TARGET * bound:,.0f}/s needs {need:.2f} cores in the worker process; one Python "
                         f"process has at most 1 (ceiling {1e6 / cpu_us:,.0f}/s = {1e6 / cpu_us / bound:.2f} of C/L "
                         "on an idle core)")
    res.data = {"n": n, "keys": KEYS, "concurrency": concurrency, "latency_ms": LATENCY_MS, "bound": bound,
                "rate": w.rate, "ratio": r, "order": order, "mean_in_flight": mean_in_flight,
                "worker": drain_data(w), "model_stats": {k: v for k, v in stats.items() if k != "last_body"}}
    return res
