"""Chaos, the slim version for ``make test``: kill -9 workers and restart the broker mid-stream.

3 workers on 12 partitions, 3,000 requests streamed over ~40 s, 4 random kill -9 (each worker
restarted with its state dir, like a pod with its volume) and 1 broker restart with a worker
leaving the group (SIGTERM) just before it, so partitions change owner while the broker goes
down. Then, in read_committed: every request answered once, every audit record once, no sticky
decision changed while its TTL ran, the changelog's per-key counters right.

Seed 8 is the schedule that most often catches the committed-offset bug this test found: a
partition whose new owner reads its committed offset while the group coordinator moves or
loads (broker restart) is re-read from offset 0, because aiokafka's ``committed()`` returns
None for a top-level NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS answer.

``make chaos`` is the big one (``bench/chaos.py``: 100,000 records, 20 kills, 2 broker
restarts); both use :func:`router_stream_dev.chaos.run_chaos`.

The broker restart needs a broker this test owns, so it starts its own :class:`LocalKafka`
instead of the session broker. With ``KAFKA_BOOTSTRAP_SERVERS`` set it runs against that broker
and skips the broker restart (the report notes it).
"""

from __future__ import annotations

import os

import pytest

from router_stream_dev.chaos import run_chaos
from router_stream_dev.local_kafka import LocalKafka

pytestmark = pytest.mark.kafka

RECORDS, WORKERS, PARTITIONS, KILLS, BROKER_RESTARTS = 3000, 3, 12, 4, 1


@pytest.mark.timeout(420)
def test_chaos_kill9_and_broker_restart(tmp_path):
    kwargs = {
        "records": RECORDS,
        "workers": WORKERS,
        "partitions": PARTITIONS,
        "kills": KILLS,
        "broker_restarts": BROKER_RESTARTS,
        "keys": 150,
        "rate": 75,
        "seed": 8,
        "workdir": tmp_path / "run",
        "drain_timeout": 150,
    }
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        report = run_chaos(given, **kwargs)
    else:
        with LocalKafka(workdir=tmp_path / "kafka") as kafka:
            report = run_chaos(kafka, **kwargs)
    print("\n" + report.summary())
    assert report.kills == KILLS
    assert report.broker_restarts == (0 if given else BROKER_RESTARTS)
    assert report.input_records == RECORDS, report.summary()
    assert report.ok, f"{report.summary()}\nworker logs in {report.workdir}"
