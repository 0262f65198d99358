"""aiokafka client settings from config: bootstrap and security (secrets only from env/files)."""

from __future__ import annotations

import os
import ssl
from typing import Any

from .config import KafkaConfig
from .errors import ConfigError


def client_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments shared by every consumer, producer and admin client we create."""
    settings: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl_context"] = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.security_protocol.startswith("SASL"):
        if not kafka.sasl_mechanism:
            raise ConfigError(
                "kafka.sasl_mechanism: required with security_protocol "
                f"{kafka.security_protocol!r} (e.g. PLAIN, SCRAM-SHA-512)"
            )
        settings["sasl_mechanism"] = kafka.sasl_mechanism
        for field, env in (
            ("sasl_plain_username", kafka.sasl_username_env),
            ("sasl_plain_password", kafka.sasl_password_env),
        ):
            if not env or env not in os.environ:
                raise ConfigError(
                    f"kafka.{field.replace('sasl_plain_', 'sasl_')}_env: set it to the name "
                    f"of an environment variable that holds the value (got {env!r}, not set)"
                )
            settings[field] = os.environ[env]
    return settings
