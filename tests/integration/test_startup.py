"""Start-up and group membership on a real broker (docs/operations.md, "Start-up and recovery").

The worker joins one consumer group, the processor's: Faust runs the worker's services without
a Kafka consumer of its own. With a stable ``worker.worker_id`` the processor's consumer is a
static member: the broker names it after the worker id and keeps it through a SIGTERM until its
session times out, so a restarted worker gets its partitions back without a rebalance.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from .helpers import make_config, setup_topics, start_worker, wait_until


async def _groups(bootstrap: str, group: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Every consumer group's name, and ``group``'s (member_id, client_id) pairs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = {g[0] for g in await admin.list_consumer_groups()}
        members: list[tuple[str, str]] = []
        for response in await admin.describe_consumer_groups([group]):
            for _error, name, _state, _ptype, _protocol, group_members, *_ in response.groups:
                if name == group:
                    members += [(m[0], m[1]) for m in group_members]
        return names, members
    finally:
        await admin.close()


def _config(kafka_bootstrap: str, prefix: str, model_servers: dict[str, Any], tmp_path: Any, **kafka: Any):
    config = make_config(
        bootstrap=kafka_bootstrap,
        candidates={n: s.base_url for n, s in model_servers.items()},
        prefix=prefix,
        state_dir=tmp_path / "state",
        extra={"kafka": kafka},
    )
    setup_topics(config, 2)
    return config


def test_one_group_and_a_static_member_that_stays_through_sigterm(
    kafka_bootstrap, prefix, model_servers, tmp_path
):
    # a session long enough that the graceful stop (a few seconds under load) ends well inside it
    config = _config(kafka_bootstrap, prefix, model_servers, tmp_path, session_timeout_ms=15_000)
    group = config["kafka"]["group_id"]
    worker = start_worker(tmp_path, config, "w1")
    names, members = asyncio.run(_groups(kafka_bootstrap, group))
    assert group in names
    assert not [n for n in names if n.startswith(group) and n != group], names  # no "<group>-control"
    assert len(members) == 1 and members[0][0].startswith("w1-"), members  # named after the worker id

    assert worker.terminate() in (0, -15)
    _, members = asyncio.run(_groups(kafka_bootstrap, group))
    assert len(members) == 1, "a static member does not leave the group on SIGTERM"
    # the broker removes it when its session runs out
    wait_until(lambda: not asyncio.run(_groups(kafka_bootstrap, group))[1], 40, what="session expiry")


def test_static_membership_off_leaves_the_group_on_sigterm(kafka_bootstrap, prefix, model_servers, tmp_path):
    config = _config(kafka_bootstrap, prefix, model_servers, tmp_path, static_membership=False)
    group = config["kafka"]["group_id"]
    worker = start_worker(tmp_path, config, "w1")
    _, members = asyncio.run(_groups(kafka_bootstrap, group))
    assert len(members) == 1 and members[0][0].startswith("router-stream-w1-"), members  # client id
    assert worker.terminate() in (0, -15)
    assert asyncio.run(_groups(kafka_bootstrap, group))[1] == [], "a dynamic member leaves at once"
