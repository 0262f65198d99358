"""The config: errors that name the field (and the known candidates), env overrides and their precedence."""

from __future__ import annotations

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError


def _cfg(**over):
    data = {
        "candidates": {
            "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
            "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
        },
        "default": "cheap",
        "strategies": [{"type": "rules", "rules": [{"when": '"legal" in tags', "then": "smart"}]}],
    }
    data.update(over)
    return data


def test_config_error_names_the_field_and_known_candidates():
    data = _cfg(
        strategies=[
            {
                "type": "rules",
                "rules": [
                    {"when": "True", "then": "cheap"},
                    {"when": "True", "then": "cheap"},
                    {"when": "True", "then": "smartt"},
                ],
            }
        ]
    )
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ={})
    assert (
        "strategies[0].rules[2].then: 'smartt' is not a candidate; did you mean 'smart'? (known: cheap, smart)"
        in str(err.value)
    )


def test_config_error_for_bad_expression_names_the_rule():
    with pytest.raises(ConfigError) as err:
        parse_config(
            _cfg(strategies=[{"type": "rules", "rules": [{"when": "len(prompt) >", "then": "cheap"}]}]),
            environ={},
        )
    assert "strategies[0].rules[0].when" in str(err.value)


def test_config_error_for_bad_value_shows_it():
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = "ftp://x"
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ={})
    assert "candidates.cheap.base_url" in str(err.value) and "ftp://x" in str(err.value)


def test_env_overrides_apply():
    cfg = parse_config(
        _cfg(),
        environ={"KAFKA_BOOTSTRAP_SERVERS": "h:1", "ROUTER_STREAM__CANDIDATES__CHEAP__MAX_RETRIES": "7"},
    )
    assert cfg.kafka.bootstrap_servers == "h:1" and cfg.candidates["cheap"].max_retries == 7


def test_every_short_env_form_and_its_precedence():
    env = {
        "ROUTER_STREAM_BOOTSTRAP_SERVERS": "rs:1",
        "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        "ROUTER_STREAM_GROUP_ID": "g",
        "ROUTER_STREAM_WORKER_ID": "w-7",
        "ROUTER_STREAM_METRICS_PORT": "7001",
        "ROUTER_STREAM_STATE_DIR": "/s",
    }
    cfg = parse_config(_cfg(), environ=env)
    assert cfg.kafka.bootstrap_servers == "rs:1"  # the router-stream name wins over KAFKA_BOOTSTRAP_SERVERS
    assert (cfg.kafka.group_id, cfg.worker.worker_id, cfg.worker.metrics_port, cfg.cache.state_dir) == (
        "g",
        "w-7",
        7001,
        "/s",
    )


def test_a_retired_field_loads_with_a_warning_that_names_it():
    from router_stream.config import parse_config

    base = {"candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}, "default": "cheap"}
    assert parse_config(base, environ={}).retired_field_warnings() == []
    old = parse_config({**base, "kafka": {"internal_replication_factor": 3}}, environ={})
    (warning,) = old.retired_field_warnings()
    assert warning.startswith("kafka.internal_replication_factor: no longer used")
