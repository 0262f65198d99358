"""Broker security settings: SASL credentials come from the env; a missing one names the field."""

from __future__ import annotations

import pytest

from router_stream.errors import ConfigError


def test_sasl_settings_come_from_env_and_missing_env_names_the_field(monkeypatch):
    from router_stream.config import KafkaConfig
    from router_stream.kafka_settings import client_settings

    kafka = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username_env="KUSER",
        sasl_password_env="KPASS",
    )
    monkeypatch.delenv("KPASS", raising=False)
    monkeypatch.setenv("KUSER", "svc")
    with pytest.raises(ConfigError) as err:
        client_settings(kafka)
    assert "kafka.sasl_password_env" in str(err.value) and "KPASS" in str(err.value)
    monkeypatch.setenv("KPASS", "s3cret-pw")
    settings = client_settings(kafka)
    assert settings["sasl_plain_password"] == "s3cret-pw" and settings["ssl_context"] is not None
    assert "s3cret-pw" not in repr(kafka)
