"""``check-config``, ``explain`` and ``run`` build the pipeline: a strategy that cannot be built is a
config error naming it (exit 2), found before any broker is contacted."""

from __future__ import annotations

import pytest

from router_stream.cli import main

HEAD = """\
candidates:
  cheap: {base_url: "http://127.0.0.1:9/v1", model: cheap}
  smart: {base_url: "http://127.0.0.1:9/v1", model: smart}
default: cheap
strategies:
"""
MISSING_ARTIFACT = HEAD + """\
  - type: learned
    weak: cheap
    strong: smart
    artifact: /nonexistent/router-v1.npz
"""
FAILING_CUSTOM = HEAD + """\
  - type: custom
    name: mine
    class: "router_stream.devtools.example_strategy:ByLength"
    config: {threshold: -5}
"""


@pytest.fixture
def write(tmp_path):
    def _write(text: str):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return str(path)
    return _write


@pytest.mark.parametrize("argv", [["check-config", "{}"], ["run", "--config", "{}"],
                                  ["explain", "--config", "{}", "--request", '{"request_id": "r", "prompt": "hi"}']])
def test_a_missing_artifact_is_a_config_error_naming_the_field(write, capsys, argv):
    path = write(MISSING_ARTIFACT)
    assert main([a.replace("{}", path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: strategies[0].artifact: learned-router artifact not found: ")
    assert "/nonexistent/router-v1.npz" in err and "Traceback" not in err


def test_check_config_still_says_ok_for_a_good_config(write, capsys):
    assert main(["check-config", write(HEAD + "  - {type: split, weights: {cheap: 1}}\n")]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 candidates (cheap, smart), 1 strategies")


def test_a_custom_strategy_whose_constructor_fails_is_a_config_error(write, capsys):
    assert main(["check-config", write(FAILING_CUSTOM)]) == 2
    err = capsys.readouterr().err
    assert "strategies[0]" in err and "'mine'" in err and "threshold must be a non-negative integer" in err


def test_check_config_checks_the_kafka_security_settings(write, capsys):
    path = write(HEAD.replace("strategies:\n", "kafka: {security_protocol: SASL_SSL}\n"))
    assert main(["check-config", path]) == 2
    assert capsys.readouterr().err.startswith("config error: kafka.sasl_mechanism: required")


def test_topics_apply_says_when_the_broker_cannot_be_reached(write, capsys):
    path = write(HEAD.replace("strategies:\n", 'kafka: {bootstrap_servers: "127.0.0.1:1"}\n'))
    assert main(["topics", "apply", "--config", path]) == 75  # EX_TEMPFAIL: worth retrying, unlike exit 2
    err = capsys.readouterr().err
    assert "kafka unavailable: cannot reach Kafka at 127.0.0.1:1 (kafka.bootstrap_servers;" in err
    assert "Traceback" not in err


def test_check_config_warns_about_unset_key_variables(write, capsys, monkeypatch):
    monkeypatch.delenv("RS_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("RS_TEST_SET_KEY", "sk-value-never-printed")
    path = write(HEAD.replace('model: cheap}', 'model: cheap, api_key_env: RS_TEST_UNSET_KEY}')
                     .replace('model: smart}', 'model: smart, api_key_env: RS_TEST_SET_KEY}')
                 + "  - {type: split, weights: {cheap: 1}}\n")
    assert main(["check-config", path]) == 0
    err = capsys.readouterr().err
    assert "warning: candidates.cheap.api_key_env: environment variable RS_TEST_UNSET_KEY is not set" in err
    assert "RS_TEST_SET_KEY" not in err and "sk-value-never-printed" not in err


@pytest.mark.parametrize("error, code", [("TopicAuthorizationFailedError", 2), ("SaslAuthenticationFailed", 2),
                                         ("KafkaTimeoutError", 75), ("RequestTimedOutError", 75)])
def test_topics_apply_exit_code_says_whether_a_retry_can_help(write, capsys, monkeypatch, error, code):
    from aiokafka import errors

    async def failing(config, specs):
        raise getattr(errors, error)()
    monkeypatch.setattr("router_stream.topics.apply_topics", failing)
    assert main(["topics", "apply", "--config", write(HEAD + "  - {type: split, weights: {cheap: 1}}\n")]) == code
    assert error in capsys.readouterr().err
