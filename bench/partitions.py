"""partitions: what one worker pays per input partition it owns (issue 19, goal 3).

Each owned requests partition has its own transactional producer (``transactional.id`` per
partition: a new owner's ``init_transactions`` fences the old one), its own RocksDB store and its
own changelog restore. This benchmark runs one ``router-stream run`` on topics of 12, 120 and 480
partitions (``BENCH_PARTITION_SIZES="12,120,480"`` to change them) against an instant loopback
model and measures, per size:

* **start → ready / first answer / all answered**: one request waits on every partition before
  the worker starts; from process start to ``/health/ready``, to the first committed answer
  (``records_done`` ≥ 1) and to an answer committed on every partition (``records_done`` ≥ P);
* **RSS**, **threads** and **open TCP connections** (ESTABLISHED sockets of the worker's own file
  descriptors, matched in ``/proc/<pid>/net/tcp*``; to the broker and in total) once all answered
  and again after the burst;
* **throughput**: a fixed burst (the same number of requests at every size, so larger sizes mean
  smaller transactions) drained from a backlog, records/s from the backlog in place to the last commit;
* **resume after kill -9**: the worker is killed with SIGKILL, one more request waits on every
  partition, and a new worker starts on the same state directory: start → first answer and →
  all answered. The new worker has the same ``worker.worker_id``, so it rejoins as the same
  static group member and gets its partitions back without waiting out the dead one's session
  timeout: the figure is the process start plus the opens.

The worker's own log gives the time from its first to its last opened partition (``opened
partition N in X s``), which isolates the per-partition opening cost from the process start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from router_stream_dev.demo import request_body
from router_stream_dev.harness import WorkerProcess, free_port, write_config

from .common import (
    Ctx,
    Headline,
    ModelServerProc,
    Result,
    Table,
    fmt_load,
    loadavg,
    proc_rss_mb,
    produce_fast,
    records_done,
    router_topics,
    traffic,
    worker_config,
)

NAME = "partitions"
TITLE = "one worker owning 12 / 120 / 480 partitions: memory, connections, start, resume, throughput"
NEEDS_KAFKA = True

TARGET_PARTITIONS = 480
TARGET_READY_S = 10.0
TARGET_RSS_MB = 1024.0

START_TIMEOUT_S = 300

_TCP_ESTABLISHED = "01"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


# ---------------------------------------------------------------------------------- /proc
def tcp_connections(pid: int, broker_port: int | None) -> tuple[int, int]:
    """(to the broker, total) ESTABLISHED TCP connections of ``pid``'s own sockets.

    ``/proc/<pid>/net/tcp`` lists the whole network namespace, so the process's socket inodes
    (``/proc/<pid>/fd`` → ``socket:[inode]``) pick its own lines out of it."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0, 0
    broker = total = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[9] not in inodes or cols[3] != _TCP_ESTABLISHED:
                continue
            total += 1
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if broker_port is not None and remote_port == broker_port:
                broker += 1
    return broker, total


def threads_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fds_of(pid: int) -> int | None:
    """Open file descriptors (sockets, RocksDB files, pipes): what ``ulimit -n`` bounds."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def open_spread(log_path: Path, offset: int = 0) -> tuple[int, float | None]:
    """How many partitions the log says were opened after byte ``offset``, and the longest
    single open (``opened partition N in X s``)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return 0, None
    took = [float(x) for x in re.findall(r"opened partition \d+ in ([\d.]+)s", text)]
    return len(took), max(took, default=None)


# ---------------------------------------------------------------------------------- one size
async def one_per_partition(bootstrap: str, topic: str, partitions: int, tag: str, seed: int) -> None:
    """One valid request on every partition of ``topic`` (explicit partition, not the key hash)."""
    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=f"{tag}-{p}".encode(),
                value=json.dumps(request_body(p, rng, f"{tag}")).encode(),
                partition=p,
            )
            for p in range(partitions)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def ready_body(port: int) -> dict[str, Any] | None:
    """``/health/ready``'s body, also while it answers 503: answers commit before every partition
    is open, and ``records_done`` is in the body either way."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def start_until_all_answered(
    worker: WorkerProcess, target: int, timeout: float, started: float
) -> dict[str, float | None]:
    """Poll the worker from ``started`` (just before its process started) until ``records_done``
    reaches ``target``: seconds to ready, to the first answer, to all (None: not within ``timeout``,
    then ``answered`` says how many were)."""
    out: dict[str, float | None] = {"ready_s": None, "first_s": None, "all_s": None, "answered": 0}
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not worker.alive:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.tail()}")
        body = ready_body(worker.metrics_port)
        now = time.monotonic() - started
        if body is not None:
            if out["ready_s"] is None and body.get("ready"):
                out["ready_s"] = now
            done = out["answered"] = int(body.get("records_done", 0))
            if out["first_s"] is None and done >= 1:
                out["first_s"] = now
            if done >= target:
                out["all_s"] = now
                if out["ready_s"] is None:
                    out["ready_s"] = now
                return out
        time.sleep(0.1)
    return out


def measure_size(ctx: Ctx, model: ModelServerProc, partitions: int, burst: int) -> dict[str, Any]:
    bootstrap = ctx.need_kafka()
    broker_port = int(bootstrap.rsplit(":", 1)[1])
    prefix = ctx.prefix(f"p{partitions}")
    topics = asyncio.run(router_topics(bootstrap, prefix, partitions))
    ctx.created_topics += list(topics.values())
    cfg = worker_config(ctx, prefix, model.base_url)
    run_dir = ctx.workdir / prefix
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(run_dir / "worker.yaml", cfg)
    log_path = run_dir / "worker.log"
    row: dict[str, Any] = {"partitions": partitions, "burst": burst}

    asyncio.run(one_per_partition(bootstrap, topics["requests"], partitions, f"{prefix}-a", 1))
    ctx.say(f"{partitions} partitions: one request waits on each; starting the worker")
    started = time.monotonic()
    worker = WorkerProcess(cfg_path, log_path, free_port()).start()
    try:
        first = start_until_all_answered(worker, partitions, START_TIMEOUT_S, started)
        row.update({f"start_{k}": v for k, v in first.items()})
        row["opened"], row["open_max_s"] = open_spread(log_path)
        pid = worker.proc.pid
        row["rss_ready_mb"] = proc_rss_mb(pid)
        row["tcp_broker"], row["tcp_total"] = tcp_connections(pid, broker_port)
        row["threads"], row["fds"] = threads_of(pid), fds_of(pid)
        if first["all_s"] is None:
            ctx.say(
                f"{partitions} partitions: only {first['answered']}/{partitions} answered and "
                f"{row['opened']} opened after {START_TIMEOUT_S} s; skipping the burst and the kill -9"
            )
            return row
        ctx.say(
            f"{partitions} partitions: ready {first['ready_s']:.1f}s, first answer {first['first_s']:.1f}s, "
            f"all {first['all_s']:.1f}s; RSS {row['rss_ready_mb']:.0f} MB, {row['tcp_broker']} broker "
            f"connections; producing a burst of {burst:,}"
        )

        records = traffic(burst, max(partitions * 4, burst // 4), 3, f"{prefix}-b")
        asyncio.run(produce_fast(bootstrap, topics["requests"], records))
        t0 = time.monotonic()
        done0 = records_done(worker.metrics_port) or 0
        target = partitions + burst
        deadline = t0 + 300
        done = done0
        while done < target:
            if not worker.alive:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"burst: {done:,}/{target:,} after 300 s\n{worker.tail(30)}")
            time.sleep(0.1)
            done = records_done(worker.metrics_port) or done
        seconds = max(1e-6, time.monotonic() - t0)
        row["rate"] = (target - done0) / seconds
        row["burst_in_window"] = target - done0
        row["rss_end_mb"] = proc_rss_mb(pid)
        row["tcp_broker_end"], row["tcp_total_end"] = tcp_connections(pid, broker_port)
        ctx.say(
            f"{partitions} partitions: burst at {row['rate']:,.0f} records/s; RSS {row['rss_end_mb']:.0f} MB; "
            f"kill -9"
        )
        worker.kill()
    finally:
        if worker.alive:
            worker.terminate(timeout=30)

    asyncio.run(one_per_partition(bootstrap, topics["requests"], partitions, f"{prefix}-c", 2))
    log_offset = log_path.stat().st_size
    started = time.monotonic()
    worker = WorkerProcess(cfg_path, log_path, free_port()).start()
    try:
        again = start_until_all_answered(worker, partitions, START_TIMEOUT_S, started)
        row.update({f"resume_{k}": v for k, v in again.items()})
        row["reopened"], row["reopen_max_s"] = open_spread(log_path, log_offset)
        ctx.say(
            f"{partitions} partitions after kill -9: first answer {_s(again['first_s'])}, all "
            f"{_s(again['all_s'])} (load {fmt_load(loadavg())})"
        )
    finally:
        code = worker.terminate(timeout=60)
        if code not in (0, None, -15):
            ctx.say(f"{partitions} partitions: worker exit status {code}")
    return row


# ---------------------------------------------------------------------------------- run
def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def sizes(ctx: Ctx) -> list[int]:
    raw = os.environ.get("BENCH_PARTITION_SIZES")
    if raw:
        return [int(x) for x in raw.split(",") if x.strip()]
    return [12, 120] if ctx.quick else [12, 120, TARGET_PARTITIONS]


def run(ctx: Ctx) -> Result:
    res = Result(NAME, TITLE)
    burst = 1_200 if ctx.quick else int(os.environ.get("BENCH_PARTITIONS_BURST", 4_800))
    rows: list[dict[str, Any]] = []
    with ModelServerProc(ctx.workdir, "partitions", latency_ms=0) as model:
        for p in sizes(ctx):
            load0 = loadavg()
            row = measure_size(ctx, model, p, burst)
            row["load"] = fmt_load(load0) + " → " + fmt_load(loadavg())
            rows.append(row)
    res.tables.append(
        Table(
            f"one worker, instant loopback model, burst of {burst:,} requests at every size",
            [
                "partitions",
                "start→ready s",
                "start→first answer s",
                "start→all answered s",
                "assign→all opened s",
                "RSS MB (ready → burst)",
                "threads",
                "open fds",
                "TCP to broker",
                "TCP total",
                "burst records/s",
                "kill -9 → first answer s",
                "kill -9 → all answered s",
            ],
            [
                [
                    r["partitions"],
                    r["start_ready_s"],
                    r["start_first_s"],
                    r["start_all_s"],
                    r["open_max_s"],
                    f"{r['rss_ready_mb']:.0f} → {_mb(r.get('rss_end_mb'))}",
                    r["threads"],
                    r["fds"],
                    r["tcp_broker"],
                    r["tcp_total"],
                    r.get("rate"),
                    r.get("resume_first_s"),
                    r.get("resume_all_s"),
                ]
                for r in rows
            ],
        )
    )
    res.notes.append(
        "start→ is from the process start (Python, imports, the worker's start-up and group join "
        "included); kill -9 → is from the restarted process's start, after one more request was "
        "produced on every partition; it rejoins as the same static member (worker.worker_id), so "
        "the group gives its partitions back without waiting out the session timeout"
    )
    res.notes.append(
        "assign→all opened: the longest partition open in the worker's log (they open concurrently from "
        "the assignment: init_transactions, store open, changelog restore, committed offset), the part "
        "of start→ready that grows with the partitions; the rest is the process's own start-up"
    )
    biggest = max(rows, key=lambda r: r["partitions"])
    rss = max(x for x in (biggest.get("rss_ready_mb"), biggest.get("rss_end_mb")) if x is not None)
    ready = biggest.get("start_ready_s") if biggest.get("start_all_s") is not None else None
    met = (
        biggest["partitions"] >= TARGET_PARTITIONS
        and ready is not None
        and ready <= TARGET_READY_S
        and rss <= TARGET_RSS_MB
    )
    rate = biggest.get("rate")
    res.headlines.append(
        Headline(
            f"{biggest['partitions']} partitions on one worker: start → ready (s)",
            ready,
            f"≥ {TARGET_PARTITIONS} partitions, ≤ {TARGET_READY_S:g} s, RSS ≤ {TARGET_RSS_MB:.0f} MB",
            met,
            f"all answered {_s(biggest.get('start_all_s'))}, assign→all opened {_s(biggest.get('open_max_s'))}, "
            f"RSS {rss:.0f} MB, {biggest['tcp_broker']} broker connections"
            + (f", {rate:,.0f} records/s" if rate else ""),
        )
    )
    res.data = {"rows": rows, "burst": burst}
    return res
