"""What every benchmark shares: the run context, progress lines, tables, process accounting,
a loopback model server in its own process, request traffic, and draining a backlog with a worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router_stream_dev.harness import WorkerProcess, create_topics, free_port, make_config, write_config

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The rules the demo uses: content and tags decide between a cheap and a strong candidate.
RULES_STRATEGY: dict[str, Any] = {
    "type": "rules",
    "name": "by-content",
    "rules": [
        {"when": '"legal" in tags or fields.lang == "de"', "then": "strong"},
        {"when": "len(prompt) > 200", "then": "strong"},
    ],
}

from router_stream_dev.demo import request_body  # noqa: E402 - the demo's traffic mix


# ---------------------------------------------------------------------------------- context
@dataclass
class Ctx:
    """One ``python -m bench`` run: broker, scratch dir, sizes, results so far."""

    bootstrap: str | None
    workdir: Path
    quick: bool
    partitions: int
    broker_pid: int | None = None
    external_broker: bool = False
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Result] = field(default_factory=dict)
    current: str = ""
    created_topics: list[str] = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"  [{time.monotonic() - self.started:6.1f}s {self.current}] {msg}", flush=True)

    def prefix(self, tag: str) -> str:
        return f"bench-{tag}-{uuid.uuid4().hex[:6]}"

    def need_kafka(self) -> str:
        if not self.bootstrap:
            raise RuntimeError("this benchmark needs a Kafka broker")
        return self.bootstrap


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]

    def render(self) -> str:
        cells = [[_fmt(c) for c in row] for row in self.rows]
        widths = [
            max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(self.headers)
        ]
        line = "  ".join("-" * w for w in widths)
        out = [
            f"  {self.title}",
            "  " + "  ".join(h.ljust(w) for h, w in zip(self.headers, widths)),
            "  " + line,
        ]
        for r in cells:
            out.append("  " + "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
        return "\n".join(out)

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(out)


@dataclass
class Headline:
    """The figure a benchmark is judged by: a ratio (or size) against its target."""

    what: str
    value: float | None
    target: str = ""
    met: bool | None = None
    text: str = ""


@dataclass
class Result:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    error: str | None = None


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|×|x|µs|ms|s|MB|/s|B)?", text.strip()))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# ---------------------------------------------------------------------------------- processes
def proc_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class CpuWatch:
    """CPU seconds used by a set of processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {k: v for k, v in pids.items() if v is not None}
        self._t0: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = {k: c for k, p in self.pids.items() if (c := proc_cpu_s(p)) is not None}

    def stop(self) -> dict[str, float]:
        for k, p in self.pids.items():
            c = proc_cpu_s(p)
            if c is not None and k in self._t0:
                self.used[k] = c - self._t0[k]
        return self.used


class ModelServerProc:
    """``python -m router_stream_dev.model_server`` in its own process (its own core share,
    its own GIL), controlled over its admin HTTP API."""

    def __init__(self, workdir: Path, name: str = "model", latency_ms: float = 0.0) -> None:
        self.workdir = workdir
        self.name = name
        self.latency_ms = latency_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> ModelServerProc:
        port_file = self.workdir / f"model-{self.name}-{uuid.uuid4().hex[:6]}.port"
        log = open(self.workdir / f"model-{self.name}.log", "ab")  # noqa: SIM115 -- the child owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router_stream_dev.model_server",
                "--name",
                self.name,
                "--port",
                "0",
                "--latency-ms",
                str(self.latency_ms),
                "--port-file",
                str(port_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"model server did not start (exit {self.proc.poll()})")
            time.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST" if data else "GET",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def set_latency(self, ms: float) -> None:
        self._admin("/admin/faults", {"latency_ms": ms})
        self.latency_ms = ms

    def stats(self) -> dict[str, Any]:
        return self._admin("/admin/stats")

    def reset_stats(self) -> None:
        self._admin("/admin/stats/reset", {})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> ModelServerProc:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- traffic


def traffic(n: int, keys: int, seed: int, id_prefix: str) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [
        (f"customer-{rng.randrange(keys)}".encode(), json.dumps(request_body(i, rng, id_prefix)).encode())
        for i in range(n)
    ]


async def produce_fast(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    say: Callable[[str], None] | None = None,
) -> float:
    """Produce with one idempotent producer (per-partition order kept); returns seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, (key, value) in enumerate(records, 1):
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
            if say and i % 20000 == 0:
                say(f"produced {i:,}/{len(records):,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def router_topics(
    bootstrap: str, prefix: str, partitions: int, extra: list[str] = ()
) -> dict[str, str]:
    names = {
        "requests": f"{prefix}.requests",
        "responses": f"{prefix}.responses",
        "audit": f"{prefix}.audit",
        "dead_letter": f"{prefix}.dead-letter",
        "changelog": f"{prefix}.decisions-changelog",
    }
    await create_topics(bootstrap, [*names.values(), *extra], partitions, compact=[names["changelog"]])
    await wait_for_leaders(bootstrap, [*names.values(), *extra], partitions)
    return names


async def wait_for_leaders(bootstrap: str, topics: list[str], partitions: int, timeout: float = 60) -> None:
    """Until every partition of ``topics`` has a leader (producing earlier only logs retries)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()

    def led(meta: Any, topic: str, p: int) -> bool:
        leader = meta.leader_for_partition(TopicPartition(topic, p))
        return leader is not None and leader >= 0

    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await c._client.force_metadata_update()
            meta = c._client.cluster
            if all(
                len(meta.partitions_for_topic(t) or ()) == partitions
                and all(led(meta, t, p) for p in range(partitions))
                for t in topics
            ):
                return
            await asyncio.sleep(0.2)
    finally:
        await c.stop()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def topic_end_total(bootstrap: str, topic: str) -> int:
    """Sum of end offsets (committed records plus transaction markers)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        ends = await c.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await c.stop()


# ---------------------------------------------------------------------------------- worker runs
@dataclass
class Drain:
    records: int
    seconds: float  # from the first commit seen to the last record done
    rate: float  # records/s over that window
    ready_s: float  # start → /health/ready
    cpu: dict[str, float]  # CPU seconds per process over the window
    rss_ready_mb: float | None
    rss_end_mb: float | None
    commits: float | None  # transactions committed (worker metrics)
    samples: list[tuple[float, int]]
    extra: dict[str, Any] = field(default_factory=dict)


def drain_data(w: Drain) -> dict[str, Any]:
    """A Drain as JSON-able data, progress samples relative to the window start."""
    t0 = w.samples[0][0] if w.samples else 0.0
    return {**w.__dict__, "samples": [(round(t - t0, 2), d) for t, d in w.samples]}


def prom_value(text: str, name: str, labels: str = "") -> float | None:
    """Sum of a metric's samples whose label set contains ``labels`` (a substring)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and labels in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
                found = True
            except ValueError:
                pass
    return total if found else None


def worker_config(
    ctx: Ctx,
    prefix: str,
    model_url: str,
    *,
    max_in_flight: int = 256,
    strategies: list[dict[str, Any]] | None = None,
    max_batch: int = 500,
    max_connections: int | None = None,
) -> dict[str, Any]:
    """A worker config as a user would write it: config defaults except topics, candidates,
    ``max_in_flight``, ``max_batch`` and, when given, each candidate's ``max_connections`` (the
    test harness's short 6 s session timeout is dropped)."""
    cfg = make_config(
        bootstrap=ctx.need_kafka(),
        candidates={"cheap": model_url, "strong": model_url},
        prefix=prefix,
        state_dir=ctx.workdir / prefix / "state",
        default="cheap",
        strategies=strategies if strategies is not None else [RULES_STRATEGY],
        extra={
            "worker": {"max_in_flight": max_in_flight, "worker_id": f"{prefix}-w1"},
            "kafka": {"max_batch": max_batch},
        },
    )
    cfg["kafka"].pop("session_timeout_ms", None)
    cfg["worker"].pop("shutdown_grace_s", None)
    if max_connections is not None:
        for cand in cfg["candidates"].values():
            cand["max_connections"] = max_connections
    for key, value in _worker_overrides().items():
        cfg["worker"][key] = value
    return cfg


def _worker_overrides() -> dict[str, Any]:
    """``BENCH_WORKER='{"batches_in_flight": 1}'`` overrides worker settings (for comparisons)."""
    raw = os.environ.get("BENCH_WORKER")
    return json.loads(raw) if raw else {}


def records_done(port: int) -> int | None:
    """``records_done`` from /health/ready, also while it answers 503 (rebalancing)."""
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except Exception:
        return None
    try:
        return int(json.loads(body).get("records_done", 0))
    except Exception:
        return None


def worker_log_health(path: Path, offset: int = 0) -> dict[str, Any]:
    """Signs of trouble in a worker log (from byte ``offset``): rebalances, lost heartbeats,
    cancelled or failed batches, event-loop lag."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        text = ""
    drifts = [float(m) for m in re.findall(r"woke up too late, with a drift of \+([\d.]+)", text)]
    return {
        "assignments": len(re.findall(r"\] assigned \[", text)),
        "assign_seconds": [float(m) for m in re.findall(r"\] assigned \[[^\]]*\] in ([\d.]+)s", text)],
        "heartbeat_failures": text.count("Heartbeat failed"),
        "cancelled_batches": sum(int(m) for m in re.findall(r"cancelled (\d+) in-flight batches", text)),
        "failed_batches": len(re.findall(r"batch at offset \d+ failed", text)),
        "max_loop_drift_s": max(drifts, default=0.0),
    }


def health_note(h: dict[str, Any]) -> str:
    took = ", ".join(f"{x:.1f}s" for x in h.get("assign_seconds", []))
    return (
        f"{h['assignments']} assignment(s){f' (took {took})' if took else ''}, "
        f"{h['heartbeat_failures']} lost heartbeat(s), "
        f"{h['cancelled_batches']} cancelled and {h['failed_batches']} failed batch(es), "
        f"max event-loop timer lag {h['max_loop_drift_s']:.1f}s"
    )


def drain_with_worker(
    ctx: Ctx,
    config: dict[str, Any],
    records: list[tuple[bytes | None, bytes]],
    *,
    label: str,
    timeout: float,
    model: ModelServerProc | None = None,
    settle_s: float = 8.0,
) -> Drain:
    """Steady-state drain rate of one ``router-stream run``.

    The worker starts on an empty requests topic and must stay ready for ``settle_s`` (start-up
    rebalances are over); then ``records`` are produced, and the window runs from the end of
    producing (a backlog now waits) to the commit of the last record. Start-up, group join and
    the producer's own CPU are outside the window; rebalances inside it are counted. With
    ``model`` given, its call counter and in-flight gauge are sampled once a second: calls/s is
    the processing rate as it happens, while ``records_done`` moves only at commits."""
    n = len(records)
    topic = config["topics"]["requests"]
    run_dir = ctx.workdir / topic
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(run_dir / f"{label}.yaml", config)
    worker = WorkerProcess(cfg_path, run_dir / f"{label}.log", free_port()).start()
    try:
        ready_s = worker.wait_ready(timeout=180)
        settle_deadline = time.monotonic() + 120
        ready_since = time.monotonic()
        while time.monotonic() - ready_since < settle_s:
            if not worker.alive:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.tail()}")
            if time.monotonic() > settle_deadline:
                ctx.say(f"{label}: worker not steadily ready after 120 s; measuring anyway")
                break
            body = worker.health()
            if not (body and body.get("ready")):
                ready_since = time.monotonic()
            time.sleep(0.25)
        startup = worker_log_health(worker.log_path)
        rss_ready = proc_rss_mb(worker.proc.pid)
        ctx.say(
            f"{label}: worker ready in {ready_s:.1f}s, settled ({health_note(startup)}); RSS "
            f"{rss_ready:.0f} MB; producing {n:,} records"
        )
        asyncio.run(produce_fast(ctx.need_kafka(), topic, records))
        log_offset = worker.log_path.stat().st_size
        watch = CpuWatch(
            {
                "worker": worker.proc.pid,
                "model server": model.pid if model else None,
                "broker": ctx.broker_pid,
            }
        )
        model_samples: list[tuple[float, int, int]] = []
        next_model_sample = 0.0
        watch.start()
        t_first = time.monotonic()
        done_first = records_done(worker.metrics_port) or 0
        ctx.say(f"{label}: backlog in place ({done_first:,} already done); draining")
        samples: list[tuple[float, int]] = [(t_first, done_first)]
        deadline = t_first + timeout
        last_say = t_first
        while True:
            if not worker.alive:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.tail()}")
            got = records_done(worker.metrics_port)
            now = time.monotonic()
            if model is not None and now >= next_model_sample:
                next_model_sample = now + 1.0
                try:
                    st = model.stats()
                    model_samples.append((now, int(st["calls"]), int(st["in_flight"])))
                except Exception:
                    pass
            if got is not None:
                samples.append((now, got))
                if got >= n:
                    break
            if now > deadline:
                raise TimeoutError(
                    f"{label}: {samples[-1][1]:,}/{n:,} records after {timeout:.0f}s\n{worker.tail(30)}"
                )
            if now - last_say >= 5:
                last_say = now
                done = samples[-1][1]
                ctx.say(
                    f"{label}: {done:,}/{n:,} records ({(done - done_first) / (now - t_first):,.0f}/s, "
                    f"load {fmt_load(loadavg())})"
                )
            time.sleep(0.2)
        t_end = time.monotonic()
        cpu = watch.stop()
        rss_end = proc_rss_mb(worker.proc.pid)
        try:
            commits = prom_value(
                worker.metrics_text(), "router_stream_transactions_total", 'outcome="commit"'
            )
        except Exception:
            commits = None
        seconds = max(1e-6, t_end - t_first)
        counted = n - done_first
        if counted < n // 2:
            ctx.say(f"{label}: only {counted:,} of {n:,} records fell inside the window; the figure is rough")
        first_commit = next((t - t_first for t, d in samples if d > done_first), None)
        extra: dict[str, Any] = {
            "counted": counted,
            "startup": startup,
            "first_commit_s": first_commit,
            "health": worker_log_health(worker.log_path, log_offset),
        }
        if len(model_samples) >= 2:
            (ta, ca, _), (tb, cb, _) = model_samples[0], model_samples[-1]
            extra["model_calls_per_s"] = (cb - ca) / (tb - ta) if tb > ta else None
            extra["model_in_flight_mean"] = sum(x for _, _, x in model_samples) / len(model_samples)
            extra["model_samples"] = [(round(t - t_first, 1), c, x) for t, c, x in model_samples]
        return Drain(
            n, seconds, counted / seconds, ready_s, cpu, rss_ready, rss_end, commits, samples, extra=extra
        )
    finally:
        code = worker.terminate(timeout=30)
        if code not in (0, None, -15):
            ctx.say(f"{label}: worker exit status {code}")
