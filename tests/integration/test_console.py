"""``router-stream send`` and ``tail`` against a real broker and worker, and the one-line errors of
``run``/``send``/``tail`` when Kafka is unreachable, refuses the login, or lacks the topics.

Every command runs as a subprocess (``python -m router_stream.cli``), as a user would run it:
the exit code and the exact stderr are what is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from router_stream_dev.harness import produce, write_config

from .helpers import make_config, setup_topics, start_worker

pytestmark = pytest.mark.kafka

RULES = [{"type": "rules", "name": "by-tag", "rules": [{"when": '"legal" in tags', "then": "strong"}]}]


def cli(*args: str, stdin: str | None = None, timeout: float = 120, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "router_stream.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def routed(kafka_bootstrap, model_servers, prefix, tmp_path):
    """A config file on the broker with its topics created (no worker yet)."""
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={n: s.base_url for n, s in model_servers.items()},
        default="cheap",
        strategies=RULES,
    )
    setup_topics(config, partitions=2)
    return config, str(write_config(tmp_path / "routing.yaml", config))


def test_send_wait_prints_the_answer_and_tail_finds_it(routed, tmp_path):
    config, path = routed
    worker = start_worker(tmp_path, config)
    try:
        sent = cli(
            "send",
            "--config",
            path,
            "--prompt",
            "What is Kafka?",
            "--key",
            "cust-1",
            "--request-id",
            "req-1",
            "--wait",
            "--timeout",
            "60",
        )
        as_json = cli(
            "send", path, "--prompt", "again", "--request-id", "req-2", "--field", "n=3", "--wait", "--json"
        )
        answer = cli(
            "tail",
            "responses",
            "--config",
            path,
            "--from-beginning",
            "--request-id",
            "req-1",
            "--max",
            "1",
            "--timeout",
            "30",
            "--jsonl",
        )
        audit = cli(
            "tail",
            "audit",
            "--config",
            path,
            "--from-beginning",
            "--request-id",
            "req-1",
            "--max",
            "1",
            "--timeout",
            "30",
        )
    finally:
        worker.terminate()
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[0].startswith("req-1  cheap (cheap-model, ")
    assert sent.stdout.splitlines()[1] == "  [cheap] answer to: What is Kafka?"
    assert sent.stderr.startswith(f"sent req-1 -> {config['topics']['requests']}[")
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply["request_id"] == "req-2" and reply["candidate"] == "cheap" and not reply.get("error")
    assert answer.returncode == 0, answer.stderr
    (line,) = answer.stdout.splitlines()
    assert json.loads(line)["output"] == "[cheap] answer to: What is Kafka?"
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.startswith("req-1  chosen cheap by default")


def test_send_wait_exits_1_on_an_error_answer(routed, model_servers, tmp_path):
    config, path = routed
    model_servers["strong"].set_faults(faults={"401": 1.0})  # not retryable: an error response
    worker = start_worker(tmp_path, config)
    try:
        failed = cli(
            "send",
            "--config",
            path,
            "--prompt",
            "Summarize this contract",
            "--tag",
            "legal",
            "--request-id",
            "bad-1",
            "--wait",
            "--timeout",
            "60",
        )
    finally:
        worker.terminate()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stdout.startswith("bad-1  ERROR (")
    assert failed.stderr.splitlines()[-1] == "error: 1 of 1 answer(s) reported an error"


def test_send_many_from_stdin_waits_for_all(routed, tmp_path):
    config, path = routed
    lines = "\n".join(json.dumps({"request_id": f"m{i}", "prompt": f"q{i}"}) for i in range(3))
    lines += '\n{"prompt": "no id: gets a uuid", "tags": ["legal"]}\n'
    worker = start_worker(tmp_path, config)
    try:
        done = cli("send", "--config", path, "--file", "-", "--key", "k", "--wait", "--json", stdin=lines)
    finally:
        worker.terminate()
    assert done.returncode == 0, done.stderr
    replies = [json.loads(x) for x in done.stdout.splitlines()]
    named = {"m0", "m1", "m2"}
    assert len(replies) == 4 and named < {r["request_id"] for r in replies}
    (other,) = [r for r in replies if r["request_id"] not in named]
    assert len(other["request_id"]) == 36 and other["candidate"] == "strong"  # a uuid4; routed by its tag


def test_send_wait_times_out_in_one_line_without_a_worker(routed):
    _, path = routed
    started = time.monotonic()
    res = cli(
        "send", "--config", path, "--prompt", "anyone?", "--request-id", "lonely", "--wait", "--timeout", "2"
    )
    assert res.returncode == 1 and time.monotonic() - started < 30
    assert res.stderr.splitlines()[0].startswith("sent lonely -> ")
    assert res.stderr.splitlines()[1].startswith(
        "error: no answer within 2 s for 1 of 1 request(s) (lonely) on "
    )


def test_send_wait_reads_only_answers_produced_after_it_started(routed, kafka_bootstrap):
    """An older answer with the same request id (a client re-sending) is not taken for the new one:
    the consumer starts at the end of the responses topic."""
    config, path = routed
    stale = json.dumps({"request_id": "again-1", "candidate": "cheap", "output": "stale"}).encode()
    asyncio.run(produce(kafka_bootstrap, config["topics"]["responses"], [(b"k", stale)]))
    res = cli(
        "send", "--config", path, "--prompt", "hi", "--request-id", "again-1", "--wait", "--timeout", "2"
    )
    assert res.returncode == 1 and "stale" not in res.stdout
    assert res.stderr.splitlines()[-1].startswith(
        "error: no answer within 2 s for 1 of 1 request(s) (again-1)"
    )


def test_tail_dead_letters_shows_why(routed, kafka_bootstrap, tmp_path):
    config, path = routed
    asyncio.run(produce(kafka_bootstrap, config["topics"]["requests"], [(b"k", b"{not json")]))
    worker = start_worker(tmp_path, config)
    try:
        res = cli("tail", "dead-letters", path, "--from-beginning", "--max", "1", "--timeout", "60")
    finally:
        worker.terminate()
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{config['topics']['requests']}[") and " not_json: " in res.stdout


def test_tail_stops_at_timeout_and_says_when_max_was_not_reached(routed):
    _, path = routed
    quiet = cli("tail", "responses", "--config", path, "--timeout", "1")
    short = cli("tail", "responses", "--config", path, "--timeout", "1", "--max", "2")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert short.returncode == 1
    assert one_line(short.stderr).startswith("error: 0 of 2 record(s) on ")


# ---- the one-line errors ---------------------------------------------------------------------


@pytest.fixture
def unapplied(kafka_bootstrap, prefix, tmp_path):
    """A config whose topics were never created on the (reachable) broker."""
    config = make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={"cheap": "http://127.0.0.1:9/v1"},
    )
    return str(write_config(tmp_path / "routing.yaml", config))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "{}"],
        ["send", "--config", "{}", "--prompt", "hi"],
        ["tail", "audit", "--config", "{}"],
    ],
)
def test_a_missing_topic_names_topics_apply(unapplied, argv):
    res = cli(*[a.replace("{}", unapplied) for a in argv], timeout=60)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert line.startswith("error: topic") and "not found on" in line
    assert line.endswith(f"create them with: router-stream topics apply --config {unapplied}")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "{}"],
        ["send", "--config", "{}", "--prompt", "hi"],
        ["tail", "responses", "--config", "{}"],
    ],
)
def test_no_reachable_broker_is_one_line_and_exit_75(tmp_path, argv):
    config = make_config(
        bootstrap="127.0.0.1:1",
        prefix="x",
        state_dir=tmp_path / "state",
        candidates={"cheap": "http://127.0.0.1:9/v1"},
    )
    path = str(write_config(tmp_path / "routing.yaml", config))
    started = time.monotonic()
    res = cli(*[a.replace("{}", path) for a in argv], timeout=60)
    assert res.returncode == 75 and time.monotonic() - started < 30
    assert one_line(res.stderr).startswith(
        "kafka unavailable: cannot reach Kafka at 127.0.0.1:1 (127.0.0.1:1: ConnectionRefusedError"
    )
    assert "start the broker, or set kafka.bootstrap_servers" in res.stderr


# ---- credentials refused: a second broker with a SASL/PLAIN listener ----------------------------


@pytest.fixture(scope="module")
def sasl_bootstrap():
    """A local broker whose second listener takes SASL/PLAIN, user ``alice`` / ``alice-secret``."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs a broker it can configure (SASL listener); an external one was given")
    from router_stream_dev.harness import free_port
    from router_stream_dev.local_kafka import LocalKafka

    plain, sasl, controller = free_port(), free_port(), free_port()
    kafka = LocalKafka(
        port=plain,
        overrides={
            "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl},"
            f"CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";',
        },
    )
    kafka.controller_port = controller
    with kafka:  # starts it, and stops and removes it at the end
        yield f"127.0.0.1:{sasl}"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "{}"],
        ["send", "--config", "{}", "--prompt", "hi"],
        ["topics", "apply", "--config", "{}"],
    ],
)
def test_refused_credentials_are_one_line_and_exit_2(sasl_bootstrap, tmp_path, argv):
    config = make_config(
        bootstrap=sasl_bootstrap,
        prefix="sasl",
        state_dir=tmp_path / "state",
        candidates={"cheap": "http://127.0.0.1:9/v1"},
        extra={
            "kafka": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username_env": "RS_TEST_KAFKA_USER",
                "sasl_password_env": "RS_TEST_KAFKA_PASSWORD",
            }
        },
    )
    path = str(write_config(tmp_path / "routing.yaml", config))
    secret = "wrong-" + os.urandom(4).hex()
    res = cli(
        *[a.replace("{}", path) for a in argv],
        timeout=90,
        env={"RS_TEST_KAFKA_USER": "alice", "RS_TEST_KAFKA_PASSWORD": secret},
    )
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert line.startswith("config error: kafka: the broker refused us (")
    assert "Authentication failed" in line and secret not in res.stderr + res.stdout


def test_the_right_credentials_pass_the_check(sasl_bootstrap, tmp_path):
    """The same path with the right password gets past the login (to the missing topic)."""
    config = make_config(
        bootstrap=sasl_bootstrap,
        prefix="sasl",
        state_dir=tmp_path / "state",
        candidates={"cheap": "http://127.0.0.1:9/v1"},
        extra={
            "kafka": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username_env": "U",
                "sasl_password_env": "P",
            }
        },
    )
    path = str(write_config(tmp_path / "routing.yaml", config))
    res = cli("send", "--config", path, "--prompt", "hi", env={"U": "alice", "P": "alice-secret"})
    assert res.returncode == 2 and "not found on" in one_line(res.stderr)
