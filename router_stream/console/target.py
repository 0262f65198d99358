"""Where ``send`` and ``tail`` talk to: Kafka client settings and topic names, from a config file
or from ``--bootstrap``/``--topic`` alone.

Why not always a config file: a client that only sends requests has no candidates or strategies to
configure. Without ``--config`` the defaults apply (``127.0.0.1:9092``, ``router.*`` topics), with
the same environment overrides a worker honours (``ROUTER_STREAM_BOOTSTRAP_SERVERS``,
``ROUTER_STREAM__TOPICS__REQUESTS``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import KafkaConfig, TopicsConfig
from ..config_sources import apply_env
from ..errors import ConfigError


@dataclass(frozen=True)
class Target:
    kafka: KafkaConfig
    topics: TopicsConfig
    config_path: str | None = None

    def apply_hint(self) -> str:
        """The command that creates the topics, for "topic missing" messages."""
        return "router-stream topics apply --config " + (self.config_path or "routing.yaml")


def resolve(config, config_path: str | None, bootstrap: str | None) -> Target:
    """``config``: a loaded RouterConfig or None; ``bootstrap`` overrides its (or the default) servers."""
    if config is not None:
        kafka, topics = config.kafka, config.topics
    else:
        data: dict = {}
        apply_env(data, dict(os.environ))
        try:
            kafka = KafkaConfig(**(data.get("kafka") or {}))
            topics = TopicsConfig(**(data.get("topics") or {}))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"environment overrides: {exc}".splitlines()[0]) from None
    if bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return Target(kafka, topics, config_path)
