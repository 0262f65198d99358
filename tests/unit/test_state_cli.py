"""`router-stream state get|evict` errors: one line, and the documented exit codes (2 usage or
config, 75 Kafka unavailable); the text rendering of a key's state."""

from __future__ import annotations

import socket

import yaml

from router_stream.cli import main
from router_stream.state_cli_get import render_text


def _config(tmp_path, **extra) -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = {
        "candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "default": "cheap",
        "kafka": {"bootstrap_servers": f"127.0.0.1:{port}"},
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_scope_value_needs_a_field_or_expression_scope(tmp_path, capsys):
    code, err = _run(capsys, "state", "get", "--config", _config(tmp_path), "--scope-value", "acme")
    assert code == 2 and "use --key" in err and len(err.splitlines()) == 1


def test_kafka_key_goes_with_scope_value(tmp_path, capsys):
    cfg = _config(tmp_path, cache={"scope": "field", "scope_field": "tenant"})
    code, err = _run(capsys, "state", "get", "--config", cfg, "--key", "k", "--kafka-key", "k2")
    assert code == 2 and "--kafka-key goes with --scope-value" in err


def test_evict_needs_control_configured_and_the_secret(tmp_path, capsys, monkeypatch):
    code, err = _run(capsys, "state", "evict", "--config", _config(tmp_path), "--key", "k")
    assert code == 2 and "control.secret_env is not set" in err
    cfg = _config(tmp_path, control={"secret_env": "RS_TEST_SECRET"})
    monkeypatch.delenv("RS_TEST_SECRET", raising=False)
    code, err = _run(capsys, "state", "evict", "--config", cfg, "--key", "k")
    assert code == 2 and "RS_TEST_SECRET" in err and "not set" in err
    monkeypatch.setenv("RS_TEST_SECRET", "short")
    code, err = _run(capsys, "state", "evict", "--config", cfg, "--key", "k")
    assert code == 2 and "too short" in err and "short" not in err.replace("too short", "")


def test_unreachable_kafka_exits_75(tmp_path, capsys):
    code, err = _run(capsys, "state", "get", "--config", _config(tmp_path), "--key", "k")
    assert code == 75 and err.startswith("kafka unavailable:") and len(err.splitlines()) == 1


def test_text_says_what_is_missing():
    report = {
        "scope_key": "u",
        "cache_scope": "key",
        "changelog": "cl",
        "found": True,
        "partitions_read": [2],
        "entries": [
            {
                "partition": 2,
                "read_to_offset": 9,
                "found": True,
                "count": 3,
                "decision": None,
                "recent_request_ids": None,
            }
        ],
    }
    text = render_text(report, 1)
    assert "none (the next request is decided afresh)" in text and "not recorded" in text
    assert "no state on partition 2" in render_text({**report, "found": False, "entries": []}, 1)
