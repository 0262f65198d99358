"""``check-config``, ``explain`` and ``run`` build the pipeline: a strategy that cannot be built is a
config error naming it (exit 2), found before any broker is contacted. Every config problem is
reported in one pass, one ``config error:`` line each; legal-but-wrong configs get warnings.
``topics apply`` refuses replication factor 1 on a cluster unless the spec asks for it."""

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
MISSING_ARTIFACT = (
    HEAD
    + """\
  - type: learned
    weak: cheap
    strong: smart
    artifact: /nonexistent/router-v1.npz
"""
)
FAILING_CUSTOM = (
    HEAD
    + """\
  - type: custom
    name: mine
    class: "router_stream_dev.example_strategy:ByLength"
    config: {threshold: -5}
"""
)


@pytest.fixture
def write(tmp_path):
    def _write(text: str):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return str(path)

    return _write


@pytest.mark.parametrize(
    "argv",
    [
        ["check-config", "{}"],
        ["run", "--config", "{}"],
        ["explain", "--config", "{}", "--request", '{"request_id": "r", "prompt": "hi"}'],
    ],
)
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
    path = write(
        HEAD.replace("model: cheap}", "model: cheap, api_key_env: RS_TEST_UNSET_KEY}").replace(
            "model: smart}", "model: smart, api_key_env: RS_TEST_SET_KEY}"
        )
        + "  - {type: split, weights: {cheap: 1}}\n"
    )
    assert main(["check-config", path]) == 0
    err = capsys.readouterr().err
    assert "warning: candidates.cheap.api_key_env: environment variable RS_TEST_UNSET_KEY is not set" in err
    assert "RS_TEST_SET_KEY" not in err and "sk-value-never-printed" not in err


@pytest.mark.parametrize(
    "error, code",
    [
        ("TopicAuthorizationFailedError", 2),
        ("SaslAuthenticationFailed", 2),
        ("KafkaTimeoutError", 75),
        ("RequestTimedOutError", 75),
    ],
)
def test_topics_apply_exit_code_says_whether_a_retry_can_help(write, capsys, monkeypatch, error, code):
    from aiokafka import errors

    async def failing(config, specs, **options):
        raise getattr(errors, error)()

    monkeypatch.setattr("router_stream.topics.apply_topics", failing)
    assert (
        main(["topics", "apply", "--config", write(HEAD + "  - {type: split, weights: {cheap: 1}}\n")])
        == code
    )
    assert error in capsys.readouterr().err


def test_check_config_reports_every_problem_in_one_pass_one_per_line(write, capsys):
    text = (
        HEAD.replace("model: smart}", "model: smart, max_retry: 3}").replace(
            "default: cheap", "defualt: cheap"
        )
        + """\
  - type: rules
    name: r
    rules: [{when: 'fields.lang == "de"', then: smartt}]
  - {type: split, weights: {cheap: -1}}
"""
    )
    assert main(["check-config", write(text)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.splitlines() == [
        "config error: candidates.smart.max_retry: unknown field; did you mean 'max_retries'?",
        "config error: defualt: unknown field; did you mean 'default'?",
        "config error: strategies[0].rules[0].then: 'smartt' is not a candidate; did you mean 'smart'? "
        "(known: cheap, smart)",
        "config error: strategies[1].weights.cheap: Input should be greater than or equal to 0 (got -1)",
        "config error: default: Field required",
    ]


def test_check_config_warns_about_strategies_that_never_run(write, capsys):
    text = (
        HEAD
        + """\
  - {type: split, name: canary, weights: {cheap: 9, smart: 1}}
  - {type: rules, name: late, rules: [{when: 'fields.lang == "de"', then: smart}]}
"""
    )
    assert main(["check-config", write(text)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: 2 candidates (cheap, smart), 2 strategies")
    assert out.err.splitlines() == [
        "warning: strategies[0]: 'canary' always decides (a split sends every key to one of its arms), so the "
        "strategy after it never runs ('late'); move it last, or remove what follows it"
    ]


def test_check_config_refuses_a_key_in_a_url_without_echoing_it(write, capsys):
    key = "sk-proj-Zq8xWv3Lr9Tn2Kp7Ys4Mb6Hd1Fg5Jc0"
    assert (
        main(
            [
                "check-config",
                write(
                    HEAD.replace("127.0.0.1:9/v1", f"127.0.0.1:9/v1?api_key={key}", 1)
                    + "  - {type: split, weights: {cheap: 1}}\n"
                ),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "config error: candidates.cheap.base_url: the URL has a key-like value in its query string (parameter "
        "'api_key'); put the key in an environment variable and name it in api_key_env instead"
    ]


# ---------------------------------------------------------------- topics apply: replication factor 1
def _specs(tmp_path, spec_text=None):
    from router_stream.config import parse_config
    from router_stream.topics import load_spec

    config = parse_config(
        {"candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c"}}, "default": "cheap"},
        environ={},
    )
    if spec_text is None:
        return load_spec(None, config)
    path = tmp_path / "topics.yaml"
    path.write_text(spec_text)
    return load_spec(path, config)


def test_the_built_in_spec_with_rf_1_is_refused_on_a_cluster_of_three(tmp_path):
    from router_stream.topics import replication_refusal

    specs = _specs(tmp_path)
    assert all(s.replication_factor == 1 and not s.replication_explicit for s in specs)
    assert replication_refusal(specs, brokers=1) is None and replication_refusal(specs, brokers=2) is None
    assert replication_refusal(specs, brokers=3) == (
        "topics apply: refusing to create router.requests, router.responses, router.audit, router.dead-letter, "
        "router.decisions-changelog with replication factor 1 on a cluster of 3 brokers (one broker down would "
        "lose them); pass --spec with replication_factor: 3 (e.g. deploy/k8s/topics.yaml), or write "
        "replication_factor: 1 in your spec if you mean it"
    )
    assert replication_refusal(specs[:1], brokers=5).startswith(
        "topics apply: refusing to create router.requests with replication factor 1 on a cluster of 5"
    )
    assert (
        replication_refusal([], brokers=5) is None
    )  # nothing to create (the topics exist): nothing to refuse


@pytest.mark.parametrize(
    "spec_text, refused",
    [
        (
            "defaults: {partitions: 3}\n",
            True,
        ),  # a spec that says nothing of replication: 1 is assumed, not asked
        ("defaults: {replication_factor: 1}\n", False),  # asked for in so many words
        ("defaults: {replication_factor: 3}\n", False),
        ("topics: {requests: {replication_factor: 1}}\n", True),  # the other four are assumed
    ],
)
def test_a_spec_that_writes_rf_1_is_allowed_on_a_cluster(tmp_path, spec_text, refused):
    from router_stream.topics import replication_refusal

    assert (replication_refusal(_specs(tmp_path, spec_text), brokers=3) is not None) is refused


def test_topics_apply_has_a_dry_run_option():
    from router_stream.cli import build_parser

    args = build_parser().parse_args(["topics", "apply", "--config", "c.yaml", "--dry-run"])
    assert args.dry_run is True
