"""The local broker as an OS process: the JVM it runs in, and how we watch it from outside.

Apart from :class:`~.local_kafka.LocalKafka` (its lifecycle and the broker settings) so the
launcher reads as start/stop/restart: here is the Java command line and the log config files the
JVM reads, the cluster id and free ports a fresh cluster needs, the checks that the process is
ours and answers Kafka requests, and the log excerpt that a failed start shows the user.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import socket
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

from router_stream.errors import RouterStreamError
from router_stream_dev.java import JavaNotFoundError, find_java


class LocalKafkaError(RouterStreamError, RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the kernel picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_id() -> str:
    """A random Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never starts with '-': StorageTool's argument parser would take such an id for an option
    (seen: 'argument --cluster-id/-t: expected one argument', about 1 start in 64).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` (cheap, before a Kafka probe)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def probe_broker(bootstrap: str, timeout: float) -> None:
    """Prove the broker answers Kafka requests: describe the cluster and list topics.

    Runs its own event loop in a worker thread so that ``start`` also works when
    called from code that already runs inside an event loop.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout * 1000))
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
            if not cluster.get("brokers"):
                raise LocalKafkaError("broker answered but lists no brokers yet")
            await asyncio.wait_for(admin.list_topics(), timeout)
        finally:
            await admin.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, probe()).result()


def java_command(libs: Path, workdir: Path, major: int, heap: str = "512m") -> list[str]:
    """The JVM command line up to the main class: small heap, logs to file (``workdir/logs``)."""
    try:
        java = find_java()
    except JavaNotFoundError as exc:
        raise LocalKafkaError(str(exc)) from exc
    if major >= 4:
        log_opt = f"-Dlog4j2.configurationFile={workdir / 'log4j2.xml'}"
    else:
        log_opt = f"-Dlog4j.configuration=file:{workdir / 'log4j.properties'}"
    return [
        java,
        "-Xms128m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={workdir / 'logs'}",
        log_opt,
        "-cp",
        f"{libs}/*",
    ]


def write_log_configs(workdir: Path, log_file: Path) -> None:
    """The log4j (Kafka 3.x) and log4j2 (4.x) configs: INFO to ``log_file``, chatty loggers at WARN."""
    log = str(log_file)
    (workdir / "log4j.properties").write_text(
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.FileAppender\n"
        f"log4j.appender.file.File={log}\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.state.change.logger=WARN\n"
    )
    (workdir / "log4j2.xml").write_text(
        '<Configuration status="WARN">\n'
        f'  <Appenders><File name="file" fileName={quoteattr(log)} append="true">\n'
        '    <PatternLayout pattern="[%d] %p %m (%c)%n"/></File></Appenders>\n'
        "  <Loggers>\n"
        '    <Logger name="kafka.request.logger" level="WARN"/>\n'
        '    <Logger name="state.change.logger" level="WARN"/>\n'
        '    <Root level="INFO"><AppenderRef ref="file"/></Root>\n'
        "  </Loggers>\n</Configuration>\n"
    )


def log_tail(log_file: Path, stdout_log: Path, lines: int = 30) -> str:
    """The broker log's errors (the cause hides above the shutdown noise) and its tail,
    plus the JVM's own stdout/stderr (``stdout_log``)."""
    parts = []
    if log_file.exists():
        text = log_file.read_text(errors="replace").splitlines()
        errors = error_lines(text)[-12:]
        if errors:
            parts.append(f"--- errors in {log_file} ---\n" + "\n".join(errors))
        parts.append(f"--- tail of {log_file} ---\n" + "\n".join(text[-lines:]))
    if stdout_log.exists() and stdout_log.stat().st_size:
        text = stdout_log.read_text(errors="replace").splitlines()
        parts.append(f"--- {stdout_log} ---\n" + "\n".join(text[-lines:]))
    return "\n".join(parts) or "(no broker log written)"


def error_lines(lines: list[str]) -> list[str]:
    """ERROR/FATAL lines, each with the exception message line that follows it."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if " ERROR " in line or " FATAL " in line:
            out.append(line)
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if nxt and not nxt.startswith(("[", "\t")):
                out.append("    " + nxt)
    return out


def is_our_broker(pid: int, workdir: Path) -> bool:
    """True when ``pid`` is alive and is the kafka.Kafka of ``workdir`` (guards pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # exited, not yet reaped
        return False
    config = str(workdir / "server.properties").encode()
    return b"kafka.Kafka" in cmdline and config in cmdline
