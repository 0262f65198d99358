"""``topics apply`` against the real broker: creates, compares, and says ERROR when the topics are
not fit to run on (a refused create, a changelog that is not compacted)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router_stream.config import parse_config
from router_stream.devtools.harness import make_config
from router_stream.topics import apply_topics, load_spec

pytestmark = pytest.mark.kafka


def _config(bootstrap: str, prefix: str, tmp_path):
    return parse_config(make_config(bootstrap=bootstrap, candidates={"cheap": "http://127.0.0.1:9/v1"},
                                    prefix=prefix, state_dir=tmp_path), environ={})


async def test_creates_then_reports_ok(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    specs = load_spec(None, config, partitions=2)
    first = await apply_topics(config, specs)
    assert [line.split()[0] for line in first] == ["created"] * 5, first
    again = await apply_topics(config, specs)
    assert again == [f"ok {s.name}" for s in specs], again


async def test_a_refused_create_is_an_error_with_the_brokers_reason(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    specs = [s.__class__(s.role, s.name, 1, 3, s.config) for s in load_spec(None, config)]  # rf 3, one broker
    report = await apply_topics(config, specs)
    assert report and all(line.startswith("ERROR ") and "not created: InvalidReplicationFactorError" in line
                          for line in report), report


async def test_a_changelog_that_is_not_compacted_is_an_error(kafka_bootstrap, prefix, tmp_path):
    config = _config(kafka_bootstrap, prefix, tmp_path)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # someone made the changelog by hand, with the default delete policy
        await admin.create_topics([NewTopic(config.topics.changelog, 2, 1)])
    finally:
        await admin.close()
    report = await apply_topics(config, load_spec(None, config, partitions=2))
    (line,) = [x for x in report if config.topics.changelog in x]
    assert line.startswith(f"ERROR {config.topics.changelog} (changelog) has cleanup.policy=delete"), report
    assert sum(x.startswith("created") for x in report) == 4
