"""Dev/test harness: configs, worker processes, producing and reading topics.

Shared by the demo, the integration tests, the chaos test and the benchmarks, so all of them
drive the real thing the same way: a ``router-stream run`` process against a real broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(
    *,
    bootstrap: str,
    candidates: dict[str, str],
    prefix: str,
    state_dir: str | Path,
    default: str | None = None,
    strategies: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    candidate_extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A router config dict: ``candidates`` maps name → base_url; topics are ``<prefix>.*``."""
    cands = {}
    for name, url in candidates.items():
        cands[name] = {
            "base_url": url,
            "model": f"{name}-model",
            "request_timeout_ms": 5000,
            "max_retries": 2,
            "price_input_per_1k": 0.0005 if name == "cheap" else 0.01,
            "price_output_per_1k": 0.0015 if name == "cheap" else 0.03,
            "context_window": 32000,
            **(candidate_extra or {}).get(name, {}),
        }
    config: dict[str, Any] = {
        "candidates": cands,
        "default": default or next(iter(candidates)),
        "strategies": strategies or [],
        "topics": {
            "requests": f"{prefix}.requests",
            "responses": f"{prefix}.responses",
            "audit": f"{prefix}.audit",
            "dead_letter": f"{prefix}.dead-letter",
            "changelog": f"{prefix}.decisions-changelog",
        },
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}-router", "session_timeout_ms": 6000},
        "cache": {"state_dir": str(state_dir)},
        "worker": {"metrics_port": free_port(), "shutdown_grace_s": 10},
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


_STARTED: list[WorkerProcess] = []


def kill_all_started() -> int:
    """kill -9 every worker this process started that is still alive (test teardown); returns the count."""
    n = 0
    while _STARTED:
        w = _STARTED.pop()
        if w.alive:
            w.kill()
            n += 1
    return n


@dataclass
class WorkerProcess:
    """A ``router-stream run`` subprocess with its own metrics port and log file."""

    config_path: Path
    log_path: Path
    metrics_port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {
            **os.environ,
            **self.env,
            "ROUTER_STREAM_METRICS_PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 -- the child process owns the handle
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router_stream.cli", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        _STARTED.append(self)
        return self

    def health(self, path: str = "/health/ready") -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 90) -> float:
        """Block until ``/health/ready`` says ready; returns seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            body = self.health()
            if body and body.get("ready"):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def records_done(self) -> int:
        body = self.health()
        return int(body.get("records_done", 0)) if body else 0

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produce (key, value) pairs, acks=all, idempotent; returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, key=key, value=value, headers=headers))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60,
    idle: float = 3.0,
    isolation_level: str = "read_committed",
) -> list[Any]:
    """Read a whole topic from the start. Stops at ``expect`` records (then waits ``idle`` more
    seconds for any extras, so duplicates are seen), or after ``idle`` s without news, or at timeout."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        last_news = time.monotonic()
        reached_at: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = sum(len(v) for v in batch.values())
            for records in batch.values():
                out.extend(records)
            now = time.monotonic()
            if got:
                last_news = now
            if expect is not None and len(out) >= expect and reached_at is None:
                reached_at = now
            if reached_at is not None and now - reached_at >= idle and now - last_news >= min(idle, 1.0):
                break
            if expect is None and now - last_news >= idle:
                break
    finally:
        await consumer.stop()
    return out


async def create_topics(
    bootstrap: str, names: list[str], partitions: int, compact: Iterable[str] = ()
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        compact = set(compact)
        await admin.create_topics(
            [
                NewTopic(
                    n, partitions, 1, topic_configs={"cleanup.policy": "compact"} if n in compact else {}
                )
                for n in names
            ]
        )
    finally:
        await admin.close()


def request_value(request_id: str, prompt: str, **extra: Any) -> bytes:
    return json.dumps({"request_id": request_id, "prompt": prompt, **extra}).encode()
