"""``topics apply`` against the real broker: creates, compares, and says ERROR when the topics are
not fit to run on (a refused create, a changelog that is not compacted)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router_stream.config import parse_config
from router_stream.topics import apply_topics, load_spec
from router_stream_dev.harness import make_config

pytestmark = pytest.mark.kafka


def _config(bootstrap: str, prefix: str, tmp_path):
    return parse_config(
        make_config(
            bootstrap=bootstrap,
            candidates={"cheap": "http://127.0.0.1:9/v1"},
            prefix=prefix,
            state_dir=tmp_path,
        ),
        environ={},
    )


async def _listed(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _wait_listed(bootstrap: str, names: list[str]) -> None:
    """The broker lists a new topic a moment after its create returns: a second run right away
    would find it missing, try to create it, and report "created meanwhile by someone else"."""
    for _ in range(100):
        if set(names) <= await _listed(bootstrap):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"topics {names} not listed 5 s after they were created")


async def test_creates_then_reports_ok(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    specs = load_spec(None, config, partitions=2)
    first = await apply_topics(config, specs)
    assert [line.split()[0] for line in first] == ["created"] * 5, first
    await _wait_listed(kafka_bootstrap, [s.name for s in specs])
    again = await apply_topics(config, specs)
    assert again == [f"ok {s.name}" for s in specs], again


async def test_a_refused_create_is_an_error_with_the_brokers_reason(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    specs = [s.__class__(s.role, s.name, 1, 3, s.config) for s in load_spec(None, config)]  # rf 3, one broker
    report = await apply_topics(config, specs)
    assert report and all(
        line.startswith("ERROR ") and "not created: InvalidReplicationFactorError" in line for line in report
    ), report


async def test_a_changelog_that_is_not_compacted_is_an_error(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # someone made the changelog by hand, with the default delete policy
        await admin.create_topics([NewTopic(config.topics.changelog, 2, 1)])
    finally:
        await admin.close()
    await _wait_listed(kafka_bootstrap, [config.topics.changelog])
    report = await apply_topics(config, load_spec(None, config, partitions=2))
    (line,) = [x for x in report if config.topics.changelog in x]
    assert line.startswith(f"ERROR {config.topics.changelog} (changelog) has cleanup.policy=delete"), report
    assert sum(x.startswith("created") for x in report) == 4


async def test_the_plan_comes_first_and_a_dry_run_changes_nothing(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    specs = load_spec(None, config, partitions=2)
    plans = []
    lines = await apply_topics(config, specs, dry_run=True, on_plan=plans.append)
    (plan,) = plans
    assert (
        plan.brokers == 1 and [s.name for s in plan.create] == [s.name for s in specs] and plan.checks == []
    )
    assert (
        lines == plan.lines()
        and lines[0] == f"create {prefix}.requests (requests): 2 partitions, replication factor 1"
    )
    assert lines[-1] == (
        f"create {prefix}.decisions-changelog (changelog): 2 partitions, replication factor 1, config "
        "cleanup.policy=compact, min.compaction.lag.ms=60000, segment.ms=3600000"
    )
    assert not {s.name for s in specs} & await _listed(kafka_bootstrap)  # nothing was created

    report = await apply_topics(config, specs, on_plan=plans.append)
    assert [line.split()[0] for line in report] == ["created"] * 5 and len(plans[1].create) == 5
    await _wait_listed(kafka_bootstrap, [s.name for s in specs])
    await apply_topics(config, specs, dry_run=True, on_plan=plans.append)
    assert plans[2].create == [] and plans[2].lines() == [f"ok {s.name}" for s in specs]


def test_the_cli_prints_the_plan_and_says_the_built_in_spec_is_for_a_laptop(
    kafka_bootstrap, prefix, tmp_path, capsys
):
    from router_stream.cli import main
    from router_stream_dev.harness import write_config

    path = write_config(
        tmp_path / "c.yaml",
        make_config(
            bootstrap=kafka_bootstrap,
            prefix=prefix,
            state_dir=tmp_path,
            candidates={"cheap": "http://127.0.0.1:9/v1"},
        ),
    )
    names = [
        f"{prefix}.{role}"
        for role in ("requests", "responses", "audit", "dead-letter", "decisions-changelog")
    ]
    assert main(["topics", "apply", "--config", str(path), "--partitions", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "plan (1 broker; built-in dev spec (no --spec): 2 partitions, replication factor 1 for every "
        "topic: right for a laptop, wrong on a cluster (there: --spec deploy/k8s/topics.yaml, "
        "replication factor 3)):"
    )
    assert [line.split()[:2] for line in out[1:]] == [["create", name] for name in names]
    assert all(line.startswith("  ") for line in out[1:])

    assert main(["topics", "apply", "--config", str(path), "--partitions", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("plan (1 broker; built-in dev spec") and len(out) == 11, out
    assert [line.split()[:2] for line in out[6:]] == [["created", name] for name in names]
    asyncio.run(_wait_listed(kafka_bootstrap, names))

    assert (
        main(["topics", "apply", "--config", str(path), "--partitions", "2"]) == 0
    )  # all there: the plan says so
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [f"  ok {name}" for name in names], out
