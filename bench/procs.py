"""Processes a benchmark measures or runs beside the worker: CPU seconds and RSS read from
``/proc`` (:class:`CpuWatch` over a window), and a loopback model server in its own process
(:class:`ModelServerProc`, its own core share and GIL, driven over its admin HTTP API).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
