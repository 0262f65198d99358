"""Running a real ``router-stream run`` worker under a benchmark: its config as a user would write
it, draining a backlog with it (:func:`drain_with_worker` -> :class:`Drain`), and reading its
health (``/health/ready``, Prometheus metrics, signs of trouble in its log).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router_stream_dev.harness import WorkerProcess, free_port, make_config, write_config

from .context import RULES_STRATEGY, Ctx
from .procs import CpuWatch, ModelServerProc, proc_rss_mb
from .report import fmt_load, loadavg
from .traffic import produce_fast


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
