"""Shared fixtures: a real Kafka broker for the session, loopback model servers, a scratch prefix.

The broker comes from :func:`router_stream_dev.broker.provide_broker`:
``KAFKA_BOOTSTRAP_SERVERS`` if set, else testcontainers when a Docker engine answers, else a
local Apache Kafka started from Maven Central jars. Never a mock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from router_stream_dev.broker import provide_broker

    with provide_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def prefix() -> str:
    """A unique topic/group prefix so tests never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def model_servers() -> Iterator[dict[str, object]]:
    """Two loopback model endpoints speaking OpenAI chat completions: fast 'cheap', slower 'strong'."""
    from router_stream_dev.model_server import ModelServer

    servers = {
        "cheap": ModelServer(name="cheap", latency_ms=2),
        "strong": ModelServer(name="strong", latency_ms=10),
    }
    for s in servers.values():
        s.start_in_thread()
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    """Whatever a test does, no worker process it started outlives it."""
    yield
    from router_stream_dev.harness import kill_all_started

    kill_all_started()
