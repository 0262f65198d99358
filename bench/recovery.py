"""recovery: time-to-ready after a restart, and the longest answer gap when one of three workers dies.

Steady traffic (a few requests a second on every partition, explicit partitions) runs through the
whole benchmark, and a reader of the read_committed audit topic notes when each answer became
visible, on which partition and from which worker. That is what a client sees: an answer exists
once its transaction committed.

(a) **Restart.** One worker with a stable ``worker.worker_id`` (as the StatefulSet gives it) runs
on a warm broker (topics, group and transaction coordinators already loaded); it is stopped
(SIGTERM, then kill -9) and started again. Time-to-ready is process start → the first committed
answer of the new process; the phases come from the worker's log (Python start-up, Faust's app
start, the processor's clients, the group join plus the first partition opened, every partition
opened) and ``/health/ready``. Target ≤ 3 s.

(b) **Failover.** Three workers share the partitions; one is killed with kill -9 and not
restarted. Its partitions move once the broker expires its session (``kafka.session_timeout_ms``),
so the longest gap without a committed answer on a moved partition is compared with the session
timeout: what is beyond it is detection by the survivors, the rebalance and opening the
partitions. Partitions that did not move are reported too: the eager rebalance pauses them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from router_stream_dev.harness import WorkerProcess, free_port, write_config

from .common import (
    Ctx,
    Headline,
    ModelServerProc,
    Result,
    Table,
    pct,
    proc_cpu_s,
    router_topics,
    worker_config,
)

NAME = "recovery"
TITLE = "time-to-ready after a restart; answer gap on moved partitions after kill -9 of 1 of 3 workers"
NEEDS_KAFKA = True
TARGET_READY_S = 3.0
RATE_PER_PARTITION = 5.0  # requests per second and partition: the gap is measured to ~1/rate


# ---------------------------------------------------------------------------------- traffic
@dataclass
class Answer:
    at: float  # wall clock when the reader saw it (committed)
    partition: int  # the request's partition
    worker: str


@dataclass
class AnswerWatch:
    """Steady traffic on every partition, and the committed answers as they appear (a thread)."""

    bootstrap: str
    topics: dict[str, str]
    partitions: int
    answers: list[Answer] = field(default_factory=list)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> AnswerWatch:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError(f"the traffic thread did not start: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._error is not None:
            raise RuntimeError(f"traffic thread failed: {self._error!r}")

    def since(self, t: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= t]

    async def _main(self, ready: threading.Event) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        # "Failed fetch offsets ... NotLeaderForPartitionError" while new topics elect leaders
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            auto_offset_reset="latest",
        )
        try:
            await producer.start()
            await reader.start()
            audit = [TopicPartition(self.topics["audit"], p) for p in range(self.partitions)]
            reader.assign(audit)
            await reader.seek_to_end(*audit)
            for tp in audit:
                await reader.position(tp)
            ready.set()
            await asyncio.gather(self._produce(producer), self._read(reader))
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
            ready.set()
        finally:
            await producer.stop()
            await reader.stop()

    async def _produce(self, producer: Any) -> None:
        step = 1.0 / (RATE_PER_PARTITION * self.partitions)
        while not self._stop.is_set():
            p = self.sent % self.partitions
            value = json.dumps({"request_id": f"rec-{self.sent}", "prompt": f"ping {self.sent}"}).encode()
            await producer.send(self.topics["requests"], value, key=f"k{p}".encode(), partition=p)
            self.sent += 1
            await asyncio.sleep(step)

    async def _read(self, reader: Any) -> None:
        while not self._stop.is_set():
            batch = await reader.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for r in records:
                    try:
                        audit = json.loads(r.value)
                        partition = int(audit["source"]["partition"])
                    except (ValueError, KeyError, TypeError):
                        continue  # not a request's audit (e.g. a control record's)
                    self.answers.append(Answer(now, partition, str(audit.get("worker_id", ""))))


# ---------------------------------------------------------------------------------- the worker's log
_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] (.*)$")
_OPENED = re.compile(r"opened partition (\d+) in ([\d.]+)s")


def log_events(path: Path, offset: int) -> list[tuple[float, str]]:
    """(wall-clock time, message) of the worker log's lines from byte ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2)))
    return out


def phases(events: list[tuple[float, str]], t0: float, partitions: int) -> dict[str, float | None]:
    """Seconds after process start at which each start-up phase ended (None: not seen)."""

    def first(pred: Any) -> float | None:
        return next((t - t0 for t, msg in events if pred(msg)), None)

    opened = [(t, m) for t, msg in events if (m := _OPENED.search(msg))]
    assigned = min((t - float(m.group(2)) for t, m in opened), default=None)
    return {
        "python up": first(lambda m: m.startswith("[^Worker]: Starting")),
        "Faust app started": first(lambda m: "[^--RouterService]: Starting" in m),
        "processor subscribed": first(lambda m: m.startswith("router-stream worker") and "consuming" in m),
        "partitions assigned": None if assigned is None else assigned - t0,
        "first partition open": opened[0][0] - t0 if opened else None,
        "all partitions open": opened[partitions - 1][0] - t0 if len(opened) >= partitions else None,
    }


# ---------------------------------------------------------------------------------- (a) restart
def _wait(cond: Any, timeout: float, what: str, worker: WorkerProcess | None = None) -> float:
    start = time.time()
    while time.time() - start < timeout:
        if worker is not None and not worker.alive:
            raise RuntimeError(f"worker exited while waiting for {what}:\n{worker.tail()}")
        if cond():
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout:.0f}s" + (f":\n{worker.tail()}" if worker else ""))


def restarts(ctx: Ctx, model: ModelServerProc, kinds: list[str]) -> list[dict[str, Any]]:
    prefix = ctx.prefix("recovery-a")
    topics = asyncio.run(router_topics(ctx.need_kafka(), prefix, ctx.partitions))
    ctx.created_topics += list(topics.values())
    run_dir = ctx.workdir / prefix
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = worker_config(ctx, prefix, model.base_url)
    path = write_config(run_dir / "worker.yaml", cfg)
    log = run_dir / "worker.log"
    watch = AnswerWatch(ctx.need_kafka(), topics, ctx.partitions).start()
    rows = []
    try:
        worker = WorkerProcess(path, log, free_port()).start()
        t0 = time.time()
        _wait(lambda: worker.health() and worker.health().get("ready"), 120, "first start", worker)
        _wait(lambda: len({a.partition for a in watch.since(t0)}) == ctx.partitions, 60, "answers", worker)
        ctx.say(
            f"worker up and answering on all {ctx.partitions} partitions (cold start {time.time() - t0:.1f}s)"
        )
        for kind in kinds:
            time.sleep(2)  # a few transactions of steady state
            worker, row = _restart(ctx, watch, worker, kind)
            ctx.say(f"restart after {kind}: first committed answer {row['first answer']:.2f}s after start")
            rows.append(row)
        worker.terminate(timeout=60)
    finally:
        watch.stop()
    return rows


def _restart(
    ctx: Ctx, watch: AnswerWatch, old: WorkerProcess, kind: str
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Stop ``old`` (SIGTERM or kill -9) and start the same worker again; its start-up phases."""
    if kind == "kill -9":
        old.kill()
    else:
        old.terminate(timeout=60)
    time.sleep(0.5)  # answers the old process committed just before it stopped are seen by now
    offset = old.log_path.stat().st_size
    worker = WorkerProcess(old.config_path, old.log_path, old.metrics_port).start()
    t0 = time.time()
    answered = _wait(lambda: watch.since(t0), 60, "an answer after the restart", worker)
    cpu = proc_cpu_s(worker.proc.pid if worker.proc else None)
    ready = _wait(lambda: (worker.health() or {}).get("ready"), 60, "ready after the restart", worker)
    _wait(lambda: len({a.partition for a in watch.since(t0)}) == ctx.partitions, 60, "answers", worker)
    everywhere = max(min(a.at for a in watch.since(t0) if a.partition == p) for p in range(ctx.partitions))
    return worker, {
        "stop": kind,
        **phases(log_events(worker.log_path, offset), t0, ctx.partitions),
        "first answer": answered - t0,
        "worker CPU s to first answer": cpu,
        "answers on every partition": everywhere - t0,
        "/health/ready": ready - t0,
    }


# ---------------------------------------------------------------------------------- (b) failover
def failover(ctx: Ctx, model: ModelServerProc) -> dict[str, Any]:
    prefix = ctx.prefix("recovery-b")
    topics = asyncio.run(router_topics(ctx.need_kafka(), prefix, ctx.partitions))
    ctx.created_topics += list(topics.values())
    run_dir = ctx.workdir / prefix
    run_dir.mkdir(parents=True, exist_ok=True)
    workers: dict[str, WorkerProcess] = {}
    session_s = 0.0
    for i in (1, 2, 3):
        cfg = worker_config(ctx, prefix, model.base_url)
        cfg["worker"]["worker_id"] = name = f"{prefix}-w{i}"
        session_s = cfg["kafka"].get("session_timeout_ms", 10_000) / 1000
        path = write_config(run_dir / f"w{i}.yaml", cfg)
        workers[name] = WorkerProcess(path, run_dir / f"w{i}.log", free_port())
    watch = AnswerWatch(ctx.need_kafka(), topics, ctx.partitions).start()
    try:
        for w in workers.values():
            w.start()
        t_start = time.time()

        def settled() -> bool:  # every worker answering, every partition answered in the last 2 s
            recent = watch.since(time.time() - 2)
            return {a.worker for a in recent} == set(workers) and len(
                {a.partition for a in recent}
            ) == ctx.partitions

        _wait(settled, 180, "three workers answering on every partition")
        time.sleep(3)
        ctx.say(f"three workers settled after {time.time() - t_start:.1f}s")
        t_kill = time.time()
        owner = {a.partition: a.worker for a in watch.since(t_kill - 3)}  # the latest answer wins
        counts = {n: sum(1 for o in owner.values() if o == n) for n in workers}
        victim = max(counts, key=lambda n: counts[n])
        moved = sorted(p for p, o in owner.items() if o == victim)
        last_before = {p: max(a.at for a in watch.since(t_kill - 3) if a.partition == p) for p in owner}
        workers[victim].kill()
        t_kill = time.time()
        ctx.say(f"kill -9 {victim} (owned partitions {moved}); session timeout {session_s:.0f}s")

        def recovered() -> bool:
            after = [a for a in watch.since(t_kill) if a.worker != victim]
            latest = {a.partition: a.at for a in after}
            return len(latest) == ctx.partitions and all(time.time() - t < 2 for t in latest.values())

        _wait(recovered, session_s + 90, "answers on every partition from the survivors")
        time.sleep(2)
        gaps: dict[int, float] = {}
        for p in range(ctx.partitions):
            times = [last_before[p]] + [a.at for a in watch.since(t_kill) if a.partition == p]
            gaps[p] = max(b - a for a, b in itertools.pairwise(times))
        first_after = {
            p: min(a.at for a in watch.since(t_kill) if a.partition == p and a.worker != victim) - t_kill
            for p in moved
        }
        kept = [p for p in range(ctx.partitions) if p not in moved]
        return {
            "session_timeout_s": session_s,
            "victim": victim,
            "moved": moved,
            "moved_gap_max_s": max(gaps[p] for p in moved),
            "moved_gap_p50_s": pct([gaps[p] for p in moved], 0.5),
            "moved_first_answer_after_kill_max_s": max(first_after.values()),
            "kept_gap_max_s": max((gaps[p] for p in kept), default=None),
            "kept_gap_p50_s": pct([gaps[p] for p in kept], 0.5) if kept else None,
            "gaps": gaps,
        }
    finally:
        watch.stop()
        for w in workers.values():
            w.terminate(timeout=60)


# ---------------------------------------------------------------------------------- run
def run(ctx: Ctx) -> Result:
    res = Result(NAME, TITLE)
    kinds = ["SIGTERM", "kill -9"] if ctx.quick else ["SIGTERM", "kill -9", "SIGTERM", "kill -9"]
    with ModelServerProc(ctx.workdir, "recovery") as model:
        rows = restarts(ctx, model, kinds)
        fo = failover(ctx, model)
    cols = [k for k in rows[0] if k != "stop"]
    res.tables.append(
        Table(
            f"restart of one worker on a warm broker, {ctx.partitions} partitions, "
            "seconds after process start when each phase ended",
            ["stopped by", *cols],
            [[r["stop"], *(r[c] for c in cols)] for r in rows],
        )
    )
    s = fo["session_timeout_s"]
    res.tables.append(
        Table(
            f"kill -9 of 1 of 3 workers ({len(fo['moved'])} of {ctx.partitions} partitions move), "
            f"session timeout {s:.0f} s",
            ["partitions", "longest gap (s)", "median gap (s)", "longest gap − session timeout (s)"],
            [
                ["moved", fo["moved_gap_max_s"], fo["moved_gap_p50_s"], fo["moved_gap_max_s"] - s],
                [
                    "kept (eager rebalance)",
                    fo["kept_gap_max_s"],
                    fo["kept_gap_p50_s"],
                    None if fo["kept_gap_max_s"] is None else fo["kept_gap_max_s"] - s,
                ],
            ],
        )
    )
    worst = max(r["first answer"] for r in rows)
    res.headlines.append(
        Headline(
            "time-to-ready after a restart (process start → first committed answer, worst)",
            worst,
            f"≤ {TARGET_READY_S:g} s",
            worst <= TARGET_READY_S,
            ", ".join(f"{r['stop']} {r['first answer']:.2f}s" for r in rows),
        )
    )
    res.headlines.append(
        Headline(
            "longest gap without a committed answer on the moved partitions ÷ session timeout",
            fo["moved_gap_max_s"] / s,
            "(report)",
            None,
            f"{fo['moved_gap_max_s']:.1f}s against {s:.0f}s",
        )
    )
    res.notes.append(
        f"traffic: {RATE_PER_PARTITION:g} requests/s on each partition throughout, so gaps are "
        f"measured to about {1 / RATE_PER_PARTITION:.1f} s; an answer counts when the read_committed "
        "audit record (committed with the response) is visible"
    )
    res.data = {"restarts": rows, "failover": fo}
    return res
