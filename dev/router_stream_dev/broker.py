"""Hand tests and tools a real Kafka broker, wherever they run.

Why: the same test suite runs on a developer's laptop with Docker, in CI
without it, and against a broker someone already runs.  ``provide_broker``
picks, in order:

1. ``$KAFKA_BOOTSTRAP_SERVERS`` when set (nothing is started or stopped);
2. testcontainers' ``KafkaContainer`` when a Docker engine answers (Confluent
   image of the same Kafka line; ``$KAFKA_IMAGE`` overrides the image);
3. :class:`~router_stream_dev.local_kafka.LocalKafka`, a broker process
   from Maven Central jars (no Docker needed).

``$KAFKA_VERSION`` (default 3.9.1) picks the version;
``$ROUTER_STREAM_BROKER=local`` skips the Docker probe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from router_stream_dev.local_kafka import DEFAULT_VERSION, LocalKafka

# Confluent Platform line that ships each Kafka line (the container image that
# testcontainers' KafkaContainer knows how to boot).
_CP_IMAGE_FOR_KAFKA: dict[str, str] = {
    "3.9": "confluentinc/cp-kafka:7.9.0",
    "4.0": "confluentinc/cp-kafka:8.0.0",
    "4.1": "confluentinc/cp-kafka:8.1.0",
}


def docker_available(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping within ``timeout`` (False without the SDK)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _kafka_container(version: str) -> Any | None:
    """A configured KafkaContainer for ``version``, or None when testcontainers/image is missing."""
    image = os.environ.get("KAFKA_IMAGE") or _CP_IMAGE_FOR_KAFKA.get(".".join(version.split(".")[:2]))
    if image is None:
        return None
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        try:
            from testcontainers.kafka import KafkaContainer  # testcontainers < 4.10
        except ImportError:
            return None
    container = KafkaContainer(image).with_kraft()
    for key, value in {
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }.items():
        container.with_env(key, value)
    return container


@contextmanager
def provide_broker() -> Iterator[str]:
    """Yield a bootstrap string of a running broker; stop it afterwards if we started it."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    version = os.environ.get("KAFKA_VERSION") or DEFAULT_VERSION
    if os.environ.get("ROUTER_STREAM_BROKER") != "local" and docker_available():
        container = _kafka_container(version)
        if container is not None:
            with container as kafka:
                yield str(kafka.get_bootstrap_server())
            return
    with LocalKafka(version) as kafka:
        yield kafka.bootstrap
