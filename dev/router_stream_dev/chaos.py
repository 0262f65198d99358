"""Chaos run: N workers on a P-partition stream, kill -9 and broker restarts, then an audit.

Shared by ``bench/chaos.py`` (``make chaos``: 100,000 records, >= 20 kills, 2 broker restarts)
and ``tests/integration/test_chaos.py`` (the slim version that runs with ``make test``).

What happens, in one process that acts as the workers' supervisor (like Kubernetes would):

1. two loopback model servers (``cheap``, ``strong``) start in threads; the five topics are
   created with ``partitions`` partitions; ``workers`` ``router-stream run`` processes start,
   each with its own state dir (its own "persistent volume") and worker id (like pod names);
2. a producer thread streams ``records`` requests at ``rate`` per second over ``keys`` keys;
   each request carries ``fields.tier`` = gold|basic at random, and the routing rules send
   gold to ``strong`` and basic to ``cheap``. Both rules decide (cacheable), so the *first*
   request of a key fixes its candidate for ``ttl_s``; only the sticky-decision table keeps the
   later requests of that key on the same candidate. Lost or stale state shows as a change;
3. at random times inside the production window the supervisor ``kill -9``'s a random live
   worker (restarted 0.5-3 s later, same id and state dir) and restarts the broker
   (:meth:`LocalKafka.restart`; only when we started the broker). Half a second before each
   broker restart one worker gets SIGTERM, so the group rebalances (new owners open partitions:
   restore state, read committed offsets) while the broker goes down and comes back. The producer
   pauses across a broker restart. A worker that exits on its own (e.g. status 70 after the
   broker went away) is restarted too, and counted as a crash;
4. after the stream is consumed (committed group offsets = end of the requests topic) the
   workers get SIGTERM, and the requests, responses, audit, dead-letter and changelog topics are
   read in ``read_committed``:

   * every input record gets exactly one output, a response or a dead letter (``lost`` /
     ``duplicated`` / ``unexpected``; no dead letters are expected), and every answered request
     one audit record; input offsets that were committed twice are listed per partition;
   * sticky decisions: per key, in the order handled, after a decision (an audit with
     ``cache_hit=false``) every later audit within ``ttl_s`` must be a cache hit with the same
     ``chosen`` (``changed`` = keys whose candidate changed within the TTL; ``redecided`` = keys
     decided again within the TTL, i.e. the state was lost even if the dice agreed);
   * the per-key request counter in the changelog equals the key's number of requests.

``Report.ok`` is true when all of those counts are zero. ``Report.summary()`` prints them.

This module is the supervisor (steps 1-3 and the drain); the input stream is
:mod:`.chaos_traffic`, the audit of step 4 :mod:`.chaos_verify`, the report :mod:`.chaos_report`.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .chaos_budgets import budget_config
from .chaos_report import Event, Report
from .chaos_traffic import PacedProducer, make_traffic
from .chaos_verify import verify
from .harness import WorkerProcess, create_topics, free_port, make_config, write_config
from .local_kafka import LocalKafka
from .model_server import ModelServer

__all__ = ["ROLES", "STICKY_RULES", "Event", "Report", "make_traffic", "run_chaos", "verify"]

ROLES = ("requests", "responses", "audit", "dead_letter", "changelog")

# Both rules decide, so every routing decision is cacheable; the tier varies between requests of
# one key, so without the sticky-decision table a key's candidate would flip about half the time.
STICKY_RULES = [
    {
        "type": "rules",
        "name": "by-tier",
        "rules": [
            {"when": 'fields.tier == "gold"', "then": "strong"},
            {"when": 'fields.tier == "basic"', "then": "cheap"},
        ],
    }
]


async def _group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Records of ``topic`` not yet committed by ``group`` (None when the broker does not answer)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        await asyncio.wait_for(consumer.start(), 10)
        described = await asyncio.wait_for(admin.describe_topics([topic]), 10)
        tps = [
            TopicPartition(topic, p["partition"])
            for t in described
            if t.get("error_code", 0) == 0
            for p in t["partitions"]
        ]
        if not tps:
            return None
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group, partitions=tps), 10)
        lag = 0
        for tp in tps:
            c = committed.get(tp)
            lag += ends[tp] - (c.offset if c is not None and c.offset >= 0 else 0)
        return lag
    except Exception:
        return None
    finally:
        for closer in (admin.close, consumer.stop):
            try:
                await closer()
            except Exception:
                pass


def _schedule(rng: random.Random, kills: int, broker_restarts: int, start: float, end: float) -> list[Event]:
    """Random times in [start, end]: the broker restarts first spread out, kills anywhere."""
    events = []
    span = max(1.0, end - start)
    for i in range(broker_restarts):  # one per slice, so two restarts are never back to back
        lo = start + span * i / broker_restarts
        events.append(
            Event(
                rng.uniform(lo + 0.15 * span / broker_restarts, lo + 0.85 * span / broker_restarts),
                "broker_restart",
            )
        )
    for _ in range(kills):
        events.append(Event(rng.uniform(start, end), "kill"))
    return sorted(events, key=lambda e: e.at)


def run_chaos(
    broker: LocalKafka | str,
    *,
    records: int = 3000,
    workers: int = 3,
    partitions: int = 12,
    kills: int = 4,
    broker_restarts: int = 1,
    keys: int | None = None,
    seed: int = 1,
    rate: float | None = None,
    workdir: str | Path | None = None,
    ttl_s: float = 86_400,
    max_batch: int = 100,
    model_latency_ms: float = 5,
    session_timeout_ms: int = 6000,
    drain_timeout: float = 600,
    rebalance_on_broker_restart: bool = True,
    budget_usd: float | None = None,
    log: Callable[[str], None] | None = print,
) -> Report:
    """Run the chaos experiment (module docstring) and return its :class:`Report`.

    ``broker``: a started :class:`LocalKafka` (broker restarts possible) or a bootstrap string
    (a broker we do not own: broker restarts are skipped and noted in the report).
    ``rate``: requests per second (default: spread the stream over about 60 s, at least 50/s).
    ``rebalance_on_broker_restart``: SIGTERM a random worker half a second before each broker
    restart, so partitions change owner (restore, committed offsets read) while the broker
    shuts down and comes back.
    ``budget_usd``: a per-key budget of this many USD (:mod:`.chaos_budgets`), checked to the
    micro-dollar against the committed answers.
    """
    t_start = time.monotonic()
    rng = random.Random(seed)
    say = log or (lambda _msg: None)
    report = Report(records=records, workers=workers, partitions=partitions)
    own_workdir = workdir is None
    wd = Path(workdir or tempfile.mkdtemp(prefix="chaos-")).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    report.workdir = str(wd)
    if isinstance(broker, LocalKafka):
        kafka: LocalKafka | None = broker
        bootstrap = broker.bootstrap
    else:
        kafka, bootstrap = None, broker
        if broker_restarts:
            report.notes.append(
                f"broker restarts skipped ({broker_restarts} asked): the broker at {broker} "
                "was not started by us (KAFKA_BOOTSTRAP_SERVERS)"
            )
            broker_restarts = 0
    keys = keys or max(10, min(1000, records // 20))
    report.keys = keys
    rate = rate or max(50.0, records / 60)

    servers = {
        "cheap": ModelServer(name="cheap", latency_ms=model_latency_ms, jitter_ms=model_latency_ms),
        "strong": ModelServer(name="strong", latency_ms=model_latency_ms * 2, jitter_ms=model_latency_ms),
    }
    for s in servers.values():
        s.start_in_thread()
    prefix = f"chaos{seed}x{int(time.time()) % 100000}"
    config = make_config(
        bootstrap=bootstrap,
        prefix=prefix,
        state_dir=wd / "state",
        candidates={n: s.base_url for n, s in servers.items()},
        default="cheap",
        strategies=STICKY_RULES,
        extra={
            "kafka": {"max_batch": max_batch, "session_timeout_ms": session_timeout_ms},
            "cache": {"ttl_s": ttl_s},
            **({"budgets": budget_config(budget_usd)} if budget_usd is not None else {}),
        },
    )
    t = config["topics"]
    asyncio.run(create_topics(bootstrap, [t[r] for r in ROLES], partitions, compact=[t["changelog"]]))

    procs: dict[str, WorkerProcess] = {}
    for i in range(1, workers + 1):
        name = f"w{i}"
        cfg = {
            **config,
            "worker": {**config["worker"], "worker_id": name},
            "cache": {**config["cache"], "state_dir": str(wd / "state" / name)},
        }
        procs[name] = WorkerProcess(write_config(wd / f"{name}.yaml", cfg), wd / f"{name}.log", free_port())
    expected_killed: set[str] = set()
    restart_at: dict[str, float] = {}
    try:
        for w in procs.values():
            w.start()
        for w in procs.values():
            w.wait_ready(120)
        say(
            f"[chaos] {workers} workers ready after {time.monotonic() - t_start:.1f}s; "
            f"streaming {records} records over {keys} keys at {rate:.0f}/s into {partitions} partitions"
        )

        traffic = make_traffic(records, keys, seed)
        producer = PacedProducer(bootstrap, t["requests"], traffic, rate)
        t0 = time.monotonic()
        producer.start()
        window = records / rate
        schedule = _schedule(rng, kills, broker_restarts, min(5.0, window * 0.1), window * 0.92)
        now = lambda: time.monotonic() - t0  # noqa: E731

        def supervise() -> None:
            for name, w in procs.items():
                if w.alive or name in restart_at:
                    continue
                if name in expected_killed:
                    expected_killed.discard(name)
                    restart_at[name] = time.monotonic() + rng.uniform(0.5, 3.0)
                else:
                    rc = w.proc.returncode if w.proc else None
                    report.crashes += 1
                    report.events.append(Event(now(), "crash", f"{name} exited {rc}"))
                    say(f"[chaos] {now():6.1f}s {name} exited by itself (status {rc}); restarting")
                    restart_at[name] = time.monotonic() + 1.0
            for name, when in list(restart_at.items()):
                if time.monotonic() >= when:
                    del restart_at[name]
                    procs[name].start()
                    report.events.append(Event(now(), "restart", name))

        pending = list(schedule)
        while pending or not producer.done.is_set():
            if producer.error is not None:
                raise RuntimeError(f"producer failed: {producer.error!r}")
            while pending and now() >= pending[0].at:
                ev = pending.pop(0)
                if ev.kind == "kill":
                    alive = [n for n, w in procs.items() if w.alive and n not in restart_at]
                    if not alive:
                        pending.insert(0, ev)
                        break
                    name = rng.choice(alive)
                    expected_killed.add(name)
                    procs[name].kill()
                    report.kills += 1
                    report.events.append(Event(now(), "kill", name))
                    say(f"[chaos] {now():6.1f}s kill -9 {name} ({producer.sent} produced)")
                elif ev.kind == "broker_restart" and kafka is not None:
                    with producer.lock:  # no produce request in flight while the broker is down
                        alive = [n for n, w in procs.items() if w.alive and n not in restart_at]
                        if rebalance_on_broker_restart and alive:
                            # a worker leaving the group now makes the others take its partitions
                            # (restore, read the committed offsets) while the broker goes down
                            name = rng.choice(alive)
                            expected_killed.add(name)
                            procs[name].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                            report.sigterms += 1
                            report.events.append(Event(now(), "sigterm", name))
                            say(f"[chaos] {now():6.1f}s SIGTERM {name} (rebalance during the broker restart)")
                            time.sleep(0.5)  # the others are leaving the old generation, about to re-join
                        began = time.monotonic()
                        say(f"[chaos] {now():6.1f}s restarting the broker ({producer.sent} produced)")
                        kafka.restart()
                        report.broker_restarts += 1
                        report.events.append(
                            Event(now(), "broker_restart", f"{time.monotonic() - began:.1f}s down")
                        )
                        say(f"[chaos] {now():6.1f}s broker back after {time.monotonic() - began:.1f}s")
                    break
            supervise()
            time.sleep(0.1)
        report.produce_s = now()
        if producer.error is not None:
            raise RuntimeError(f"producer failed: {producer.error!r}")
        say(f"[chaos] {now():6.1f}s all {producer.sent} records produced; waiting for the group to catch up")

        drain_started = time.monotonic()
        last_check, lag = 0.0, None
        while True:
            supervise()
            if time.monotonic() - last_check >= 2.0:
                last_check = time.monotonic()
                lag = asyncio.run(_group_lag(bootstrap, config["kafka"]["group_id"], t["requests"]))
                if lag == 0 and not restart_at and all(w.alive for w in procs.values()):
                    break
            if time.monotonic() - drain_started > drain_timeout:
                report.notes.append(f"group lag still {lag} after {drain_timeout:.0f}s of draining")
                break
            time.sleep(0.2)
        report.drain_s = time.monotonic() - drain_started
        say(f"[chaos] {now():6.1f}s group caught up (lag {lag}) after {report.drain_s:.1f}s; verifying")
    finally:
        report.final_exit_codes = [w.terminate(60) if w.proc is not None else None for w in procs.values()]
        for s in servers.values():
            s.stop()

    started_verify = time.monotonic()
    verify(bootstrap, config, report, {f"req-{i}" for i in range(records)}, budget_usd=budget_usd)
    report.verify_s = time.monotonic() - started_verify
    for w in procs.values():
        text = w.log_path.read_text(errors="replace") if w.log_path.exists() else ""
        report.fenced_batches += len(re.findall(r"\): fenced \(|fenced by a newer owner", text))
        report.aborted_batches += len(re.findall(r"failed \(.*\); it will be re-read", text))
        report.fatal_exits += len(re.findall(r"\bfatal: ", text))
    report.total_s = time.monotonic() - t_start
    if own_workdir and report.ok:
        shutil.rmtree(wd, ignore_errors=True)
    return report
