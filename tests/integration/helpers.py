"""Helpers for integration tests on the real broker (counting, waiting, starting workers)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from router_stream_dev.harness import WorkerProcess, create_topics, make_config, read_topic, write_config

ROLES = ("requests", "responses", "audit", "dead_letter", "changelog")


def setup_topics(config: dict[str, Any], partitions: int) -> None:
    t = config["topics"]
    asyncio.run(
        create_topics(
            config["kafka"]["bootstrap_servers"], [t[r] for r in ROLES], partitions, compact=[t["changelog"]]
        )
    )


def start_worker(
    tmp: Path, config: dict[str, Any], name: str = "w1", env: dict[str, str] | None = None, ready: bool = True
) -> WorkerProcess:
    cfg_path = write_config(
        tmp / f"{name}.yaml", {**config, "worker": {**config["worker"], "worker_id": name}}
    )
    from router_stream_dev.harness import free_port

    w = WorkerProcess(cfg_path, tmp / f"{name}.log", free_port(), env=env or {}).start()
    if ready:
        w.wait_ready()
    return w


def ids_of(records: list[Any]) -> Counter[str]:
    return Counter(json.loads(r.value)["request_id"] for r in records)


def read(
    config: dict[str, Any], role: str, expect: int | None = None, timeout: float = 120, idle: float = 3
) -> list[Any]:
    return asyncio.run(
        read_topic(
            config["kafka"]["bootstrap_servers"],
            config["topics"][role],
            expect=expect,
            timeout=timeout,
            idle=idle,
        )
    )


def key_counts_from_changelog(config: dict[str, Any]) -> dict[str, int]:
    """The committed per-key request counters: last changelog value per ``k:`` key."""
    last: dict[bytes, bytes | None] = {}
    for r in read(config, "changelog"):
        last[r.key] = r.value
    out = {}
    for k, v in last.items():
        if k.startswith(b"k:") and v is not None:
            out[k[2:].decode()] = json.loads(v)["count"]
    return out


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def assert_exactly_once(ids: Counter[str], expected: set[str], what: str) -> None:
    missing = expected - set(ids)
    dups = {k: n for k, n in ids.items() if n > 1}
    extra = set(ids) - expected
    assert not missing and not dups and not extra, (
        f"{what}: {len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated "
        f"(e.g. {list(dups.items())[:5]}), {len(extra)} unexpected"
    )


__all__ = [
    "assert_exactly_once",
    "ids_of",
    "key_counts_from_changelog",
    "make_config",
    "read",
    "setup_topics",
    "start_worker",
    "wait_until",
]
